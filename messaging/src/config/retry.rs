//! The `retry.*` keys of a channel, read into its [`RetryPolicy`], with their built-in defaults.
//!
//! Every value is checked even while `retry.max-retries` is 0, so a typo shows at the start
//! rather than on the day retries are switched on.

use std::time::Duration;

use super::channel::parse_signed_ms;
use super::error::ConfigError;
use super::keys::{
    RETRY_INITIAL_DELAY, RETRY_JITTER, RETRY_MAX_DELAY, RETRY_MAX_DURATION, RETRY_MAX_RETRIES,
    RETRY_MULTIPLIER,
};
use super::layers::Setting;
use crate::retry::RetryPolicy;

/// Reads the policy; `get` looks an attribute up in the channel's scope, else returns the
/// default it is given.
pub(super) fn resolve(
    get: impl Fn(&str, &str) -> (String, Setting),
) -> Result<RetryPolicy, ConfigError> {
    let (key, setting) = get(RETRY_MAX_RETRIES, "0");
    let max_retries = setting.value.trim().parse::<u32>().map_err(|_| {
        ConfigError::invalid(
            &key,
            &setting,
            "not a number of retries",
            Some("a whole number >= 0, e.g. 3 (0 turns retries off)".into()),
        )
    })?;
    let (initial_key, initial_setting) = get(RETRY_INITIAL_DELAY, "1000");
    let initial_delay = non_negative_ms(&initial_key, &initial_setting)?;
    let (key, setting) = get(RETRY_MAX_DELAY, "30000");
    let max_delay = non_negative_ms(&key, &setting)?;
    if max_delay < initial_delay {
        return Err(ConfigError::invalid(
            &key,
            &setting,
            format!(
                "shorter than the first delay ({initial_key} = {})",
                initial_setting.value.trim()
            ),
            Some(format!("a number of milliseconds >= {initial_key}")),
        ));
    }
    let multiplier = fraction_or_factor(
        get(RETRY_MULTIPLIER, "2.0"),
        |multiplier| multiplier >= 1.0,
        "a number >= 1, e.g. 2 (1 keeps the delay constant)",
    )?;
    let jitter = fraction_or_factor(
        get(RETRY_JITTER, "0.2"),
        |jitter| (0.0..=1.0).contains(&jitter),
        "a fraction from 0 to 1, e.g. 0.2 for ±20 % (0 makes the delays exact)",
    )?;
    let (key, setting) = get(RETRY_MAX_DURATION, "180000");
    let max_duration = parse_signed_ms(&key, &setting)?.filter(|limit| !limit.is_zero());
    Ok(RetryPolicy::new(
        max_retries,
        initial_delay,
        max_delay,
        multiplier,
        jitter,
        max_duration,
    ))
}

fn non_negative_ms(key: &str, setting: &Setting) -> Result<Duration, ConfigError> {
    parse_signed_ms(key, setting)?.ok_or_else(|| {
        ConfigError::invalid(
            key,
            setting,
            "a delay cannot be negative",
            Some("a number of milliseconds >= 0".into()),
        )
    })
}

/// A finite number that `acceptable` accepts.
fn fraction_or_factor(
    (key, setting): (String, Setting),
    acceptable: impl Fn(f64) -> bool,
    accepted: &str,
) -> Result<f64, ConfigError> {
    match setting.value.trim().parse::<f64>() {
        Ok(number) if number.is_finite() && acceptable(number) => Ok(number),
        Ok(_) => Err(ConfigError::invalid(
            &key,
            &setting,
            "out of range",
            Some(accepted.into()),
        )),
        Err(_) => Err(ConfigError::invalid(
            &key,
            &setting,
            "not a number",
            Some(accepted.into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::Source;

    /// Resolves with the given keys set in code, the rest at their defaults.
    fn resolved(set: &[(&str, &str)]) -> Result<RetryPolicy, ConfigError> {
        resolve(|attribute, default| {
            let key = format!("messaging.incoming.orders.{attribute}");
            let (value, source) = match set.iter().find(|(name, _)| *name == attribute) {
                Some((_, value)) => (value.to_string(), Source::Code),
                None => (default.to_owned(), Source::BuiltIn),
            };
            let setting = Setting {
                value,
                source,
                key: key.clone(),
            };
            (key, setting)
        })
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn the_defaults_retry_nothing_and_describe_the_documented_schedule() {
        assert_eq!(
            resolved(&[]).unwrap(),
            RetryPolicy::new(0, ms(1000), ms(30_000), 2.0, 0.2, Some(ms(180_000)))
        );
    }

    #[test]
    fn every_key_is_read() {
        let policy = resolved(&[
            ("retry.max-retries", "5"),
            ("retry.initial-delay.ms", "200"),
            ("retry.max-delay.ms", "200"),
            ("retry.multiplier", "1"),
            ("retry.jitter", "0"),
            ("retry.max-duration.ms", "-1"),
        ])
        .unwrap();
        assert_eq!(
            policy,
            RetryPolicy::new(5, ms(200), ms(200), 1.0, 0.0, None)
        );
        assert_eq!(
            resolved(&[("retry.max-duration.ms", "0")]).unwrap(),
            RetryPolicy::new(0, ms(1000), ms(30_000), 2.0, 0.2, None),
            "0 is no limit too"
        );
    }

    #[test]
    fn bad_values_name_the_key_the_value_and_what_is_accepted() {
        for (attribute, value, expected) in [
            ("retry.max-retries", "-1", "a whole number >= 0"),
            ("retry.max-retries", "three", "a whole number >= 0"),
            ("retry.initial-delay.ms", "-5", "milliseconds >= 0"),
            ("retry.initial-delay.ms", "1s", "an integer"),
            (
                "retry.max-delay.ms",
                "500",
                "shorter than the first delay (messaging.incoming.orders.retry.initial-delay.ms = 1000)",
            ),
            ("retry.multiplier", "0.5", "a number >= 1"),
            ("retry.multiplier", "NaN", "a number >= 1"),
            ("retry.multiplier", "double", "not a number"),
            ("retry.jitter", "1.5", "a fraction from 0 to 1"),
            ("retry.jitter", "-0.1", "a fraction from 0 to 1"),
            ("retry.max-duration.ms", "3m", "not a whole number of milliseconds"),
        ] {
            let error = resolved(&[(attribute, value)]).unwrap_err();
            let text = error.to_string();
            assert_eq!(
                error.key(),
                format!("messaging.incoming.orders.{attribute}"),
                "{text}"
            );
            assert_eq!(error.value(), Some(value), "{text}");
            assert!(text.contains(expected), "{text}");
        }
    }
}
