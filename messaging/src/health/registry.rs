use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::report::{CheckReport, HealthReport, Status};

/// One of the three probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Liveness,
    Readiness,
    Startup,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Self::Liveness => "messaging liveness",
            Self::Readiness => "messaging readiness",
            Self::Startup => "messaging startup",
        }
    }
}

/// The health of every channel, shared by the connectors (which write it) and the HTTP
/// server (which reads it). Cheap to clone.
#[derive(Clone, Default)]
pub struct HealthRegistry {
    channels: Arc<Mutex<BTreeMap<String, ChannelHealth>>>,
    /// Set when the application has shut down: background probes stop.
    closed: Arc<AtomicBool>,
}

struct ChannelHealth {
    failure: Option<String>,
    /// Why the channel is not ready, by what the reason is about: each clears on its own (a
    /// broker that answers again does not make a channel without its assignment ready).
    not_ready: BTreeMap<Aspect, String>,
    started: bool,
}

/// What a channel's readiness depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Aspect {
    /// The channel itself: started, assigned, not stopped.
    Channel,
    /// Its client reaches a broker.
    Broker,
    /// Its consumer reports no error (it fetches, holds its group, is authorized).
    Consuming,
    /// Its dead-letter producer reaches a broker.
    DeadLetterBroker,
    /// Its dead-letter producer can write the retry topic its failures go to next
    /// (`delayed-retry-topic`).
    RetryTopic,
    /// The store it writes to (Cosmos DB) answers.
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    Sink,
}

impl HealthRegistry {
    /// Adds a channel: alive, not ready and not started until its connector says so.
    pub(crate) fn register(&self, channel: &str) {
        self.lock().insert(
            channel.to_owned(),
            ChannelHealth {
                failure: None,
                not_ready: BTreeMap::from([(Aspect::Channel, "starting".to_owned())]),
                started: false,
            },
        );
    }

    /// Records a failure: liveness DOWN for good, and the channel is no longer ready.
    pub(crate) fn fail(&self, channel: &str, reason: &str) {
        self.update(channel, |health| {
            if health.failure.is_none() {
                health.failure = Some(reason.to_owned());
            }
        });
    }

    /// The channel has started and is ready as far as it is concerned.
    pub(crate) fn ready(&self, channel: &str) {
        self.update(channel, |health| {
            health.not_ready.remove(&Aspect::Channel);
            health.started = true;
        });
    }

    pub(crate) fn not_ready(&self, channel: &str, reason: &str) {
        self.not_ready_for(channel, Aspect::Channel, reason);
    }

    pub(crate) fn ready_for(&self, channel: &str, aspect: Aspect) {
        self.update(channel, |health| {
            health.not_ready.remove(&aspect);
        });
    }

    pub(crate) fn not_ready_for(&self, channel: &str, aspect: Aspect, reason: &str) {
        self.update(channel, |health| {
            health.not_ready.insert(aspect, reason.to_owned());
        });
    }

    /// The application has shut down: probes that report here stop.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn update(&self, channel: &str, change: impl FnOnce(&mut ChannelHealth)) {
        if let Some(health) = self.lock().get_mut(channel) {
            change(health);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelHealth>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep serving.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The report of one probe.
    pub fn check(&self, check: Check) -> CheckReport {
        let channels = self.lock();
        let data: BTreeMap<String, Result<(), String>> = channels
            .iter()
            .map(|(channel, health)| {
                let state = match check {
                    Check::Liveness => health.failure.clone().map_or(Ok(()), Err),
                    // A failure is the more useful reason: say it first.
                    Check::Readiness => match (&health.failure, health.not_ready.is_empty()) {
                        (Some(failure), _) => Err(failure.clone()),
                        (None, true) => Ok(()),
                        (None, false) => Err(health
                            .not_ready
                            .values()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; ")),
                    },
                    Check::Startup => {
                        if health.started {
                            Ok(())
                        } else {
                            Err("not started".to_owned())
                        }
                    }
                };
                (channel.clone(), state)
            })
            .collect();
        let status = if data.values().all(Result::is_ok) {
            Status::Up
        } else {
            Status::Down
        };
        CheckReport {
            name: check.name().to_owned(),
            status,
            data,
        }
    }

    /// The report of several probes together, as `/health` serves liveness and readiness.
    pub fn report(&self, checks: &[Check]) -> HealthReport {
        HealthReport::of(checks.iter().map(|check| self.check(*check)).collect())
    }
}
