//! What the library logs, captured for tests that check a log line.

use std::sync::{Arc, Mutex, OnceLock};

/// Everything logged at INFO and above by this test binary, from the first call on, and the
/// Kafka client errors held back from INFO (logged at DEBUG).
///
/// Global, not a thread's (`set_default`): tracing caches each log line's interest for the
/// whole process when a thread first reaches it, so another test reaching a line with no
/// subscriber would disable it for every thread. Other tests' lines land here too: look for
/// text only your test writes.
pub fn captured_logs() -> CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter("info,messaging::connectors::kafka::client_errors=debug")
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        // A line first reached between the subscriber's registration and its becoming the
        // global one would otherwise stay disabled.
        tracing::callsite::rebuild_interest_cache();
        logs
    })
    .clone()
}

#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
