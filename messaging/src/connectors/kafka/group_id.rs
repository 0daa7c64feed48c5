//! Where a consumer's `group.id` comes from, said once per channel at startup.
//!
//! The default, `<application-name>-<channel>`, hangs on `messaging.application-name`, which in
//! turn defaults to the executable's name: renaming the binary silently starts a new group,
//! which begins at `auto.offset.reset` (`latest` by default) and skips what the old group had
//! not read. The log line makes that visible where an operator looks first.

use super::client_config::ClientSettings;
use crate::config::{default_group_id, GlobalSettings, Source, GROUP_ID};

/// Sets the default group id unless one is configured, and logs the group and its origin.
pub(crate) fn resolve(client: &mut ClientSettings, channel: &str, global: &GlobalSettings) {
    client.default(
        GROUP_ID,
        &default_group_id(&global.application_name, channel),
    );
    let Some(setting) = client.setting(GROUP_ID) else {
        return;
    };
    let origin = match &setting.source {
        Source::BuiltIn => {
            let name_origin = match &global.application_name_source {
                Source::BuiltIn => "built-in default: the executable name".to_owned(),
                configured => configured.to_string(),
            };
            format!(
                "from built-in default: <application-name>-<channel>, with messaging.application-name `{}` from {name_origin}",
                global.application_name
            )
        }
        configured => format!("from {configured}"),
    };
    tracing::info!(%channel, "consumer group `{}` ({origin})", setting.value);
}
