use std::collections::BTreeMap;
use std::fmt;

/// UP or DOWN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Up,
    Down,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
        })
    }
}

/// One probe's result: per channel, OK or the reason it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub name: String,
    pub status: Status,
    pub data: BTreeMap<String, Result<(), String>>,
}

/// What a health endpoint answers, in MicroProfile Health's JSON shape:
/// `{"status":"UP","checks":[{"name":..,"status":..,"data":{"<channel>":"[OK]"}}]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub status: Status,
    pub checks: Vec<CheckReport>,
}

impl HealthReport {
    pub(crate) fn of(checks: Vec<CheckReport>) -> Self {
        let status = if checks.iter().all(|check| check.status == Status::Up) {
            Status::Up
        } else {
            Status::Down
        };
        Self { status, checks }
    }

    pub fn to_json(&self) -> String {
        let checks: Vec<serde_json::Value> = self
            .checks
            .iter()
            .map(|check| {
                let data: serde_json::Map<String, serde_json::Value> = check
                    .data
                    .iter()
                    .map(|(channel, state)| {
                        let text = match state {
                            Ok(()) => "[OK]".to_owned(),
                            Err(reason) => format!("[KO] - {reason}"),
                        };
                        (channel.clone(), serde_json::Value::String(text))
                    })
                    .collect();
                serde_json::json!({"name": check.name, "status": check.status.to_string(), "data": data})
            })
            .collect();
        serde_json::json!({"status": self.status.to_string(), "checks": checks}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Check, HealthRegistry};

    #[test]
    fn a_failed_channel_turns_liveness_down_with_its_reason() {
        let registry = HealthRegistry::default();
        registry.register("movies");
        registry.register("movies-out");
        registry.ready("movies");
        registry.ready("movies-out");
        assert_eq!(
            registry.report(&[Check::Liveness]).to_json(),
            r#"{"checks":[{"data":{"movies":"[OK]","movies-out":"[OK]"},"name":"messaging liveness","status":"UP"}],"status":"UP"}"#
        );
        registry.fail(
            "movies",
            "I don't like movies with ' in their title: Schindler's List",
        );
        let report = registry.report(&[Check::Liveness, Check::Readiness]);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["status"], "DOWN");
        assert_eq!(
            json["checks"][0]["data"]["movies"],
            "[KO] - I don't like movies with ' in their title: Schindler's List"
        );
        assert_eq!(json["checks"][0]["data"]["movies-out"], "[OK]");
        registry.ready("movies");
        assert_eq!(
            registry.check(Check::Liveness).status,
            super::Status::Down,
            "a failure is final"
        );
    }
}
