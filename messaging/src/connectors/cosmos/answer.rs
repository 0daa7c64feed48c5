//! What Cosmos DB's answer to a write means for the record, by status and sub-status.
//!
//! | answer | class | what happens |
//! |---|---|---|
//! | 2xx; 409 to a create; 404 to a delete | written | acked |
//! | 429, 503, 410, 449, 404/1002 | transient, Cosmos DB unavailable | retried by `retry.*`, honouring `x-ms-retry-after-ms`; never dead-lettered: Cosmos DB (or the document's partition) cannot serve now, so retries running out is an outage |
//! | 408, 500 and other 5xx; a panic of the SDK during the request | transient | retried the same way; retries running out while other writes were answered is this record's problem |
//! | no answer (connection refused, DNS, timeout; the SDK's other refusals, about its own setup) | outage | retried; counts toward an outage |
//! | 401, 403, 404 to a write (database or container gone) | outage | never the record's fault: counts toward an outage at once |
//! | other 4xx (400 bad document, 413 too large, 409 to an upsert, 412, 403/1014 partition full), a request the SDK refuses for the record (400/20021 a body it cannot send, 400/20100 to 20103 a partition key it cannot use) | permanent | the inbound failure strategy applies at once; a refused request is no answer, so it neither ends a pause nor lets a retried record be dead-lettered as "others were answered" |
//!
//! A failure's reason names the operation, the status, the sub-status and the activity id:
//! never the account key, never the document.

use std::time::Duration;

use azure_data_cosmos::CosmosError;

use crate::failure::Failure;
use crate::retry::ErrorClass;

/// The class name a Cosmos DB failure carries (the dead-letter record's exception class).
pub(crate) const COSMOS_FAILURE: &str = "messaging::CosmosDbError";

/// How a failed write should be handled.
pub(crate) enum FailedWrite {
    /// Wrong with this record: no retry.
    Permanent(Failure),
    /// The SDK would not send it (a body it cannot send): wrong with this record too, but
    /// Cosmos DB never saw it, so it says nothing about whether Cosmos DB is up.
    Refused(Failure),
    /// Worth another try of the same write.
    Transient {
        failure: Failure,
        retry_after: Option<Duration>,
        /// Cosmos DB (or the document's partition) says it cannot serve now, whatever the
        /// record: throttled (429), unavailable (503), moving (410), a conflicting change in
        /// progress (449), a replica behind (404/1002). However long it lasts, it is never the
        /// record's fault.
        unavailable: bool,
    },
    /// Cosmos DB cannot take any write now (unreachable, the key rejected, the container gone).
    Outage(Failure),
}

impl FailedWrite {
    /// The failure, whatever its class.
    pub(crate) fn failure(&self) -> &Failure {
        match self {
            Self::Permanent(failure) | Self::Refused(failure) | Self::Outage(failure) => failure,
            Self::Transient { failure, .. } => failure,
        }
    }
}

/// The verdict on a write's error; `None` when the error means the write is done anyway.
pub(crate) fn judge(error: &CosmosError, operation: &str, create: bool) -> Option<FailedWrite> {
    let status = error.status();
    let code = status.status_code();
    let sub_status = status.sub_status().map(|sub| sub.value());
    match (u16::from(code), operation) {
        // The document is there (create) or already gone (delete): what the write wanted.
        (409, _) if create => return None,
        (404, "delete") if sub_status.unwrap_or(0) == 0 => return None,
        _ => {}
    }
    let headers = error.response().map(|response| response.headers());
    let activity_id = headers
        .and_then(|headers| headers.activity_id.as_ref())
        .map_or_else(|| "none".to_owned(), |id| id.as_str().to_owned());
    let retry_after = headers
        .and_then(|headers| headers.retry_after_ms)
        .map(Duration::from_millis);
    // Sub-statuses from 20000 up are the SDK's own: the request got no answer.
    let answered = error.is_from_wire() && sub_status.is_none_or(|sub| sub < 20_000);
    let sub_status_text = match (sub_status, status.name()) {
        (Some(sub), Some(name)) => format!(", sub-status {sub} {name}"),
        (Some(sub), None) => format!(", sub-status {sub}"),
        (None, _) => String::new(),
    };
    let what = if answered {
        format!(
            "Cosmos DB answered the {operation} with {} {code:?}{sub_status_text}",
            u16::from(code)
        )
    } else {
        format!(
            "the {operation} got no answer from Cosmos DB ({} {code:?}{sub_status_text})",
            u16::from(code)
        )
    };
    let failure = cosmos_failure(format!("{what}; activity id {activity_id}"));
    if !answered {
        // The SDK refused the request for what the record gave it: the record's problem.
        // Anything else without an answer (refused, DNS, timeout, and the SDK's own 400s about
        // its setup: an HTTP client it could not build, a URL without a host) is Cosmos DB out
        // of reach, never a reason to dead-letter.
        if refused_for_the_record(u16::from(code), sub_status) {
            return Some(FailedWrite::Refused(failure));
        }
        return Some(FailedWrite::Outage(failure));
    }
    let transient = |failure, unavailable| FailedWrite::Transient {
        failure,
        retry_after,
        unavailable,
    };
    Some(match (u16::from(code), sub_status.unwrap_or(0)) {
        // The logical partition is full: no write of this partition key can succeed.
        (403, 1014) => FailedWrite::Permanent(failure),
        // The session's replica is behind: another try reads a newer one.
        (404, 1002) => transient(failure, true),
        (401 | 403 | 404, _) => FailedWrite::Outage(failure),
        (410 | 429 | 449 | 503, _) => transient(failure, true),
        // A timeout or an internal error may come of this very document (a costly one, say):
        // if others are answered meanwhile, it is the record's problem once retries run out.
        (408, _) => transient(failure, false),
        (code, _) if code >= 500 => transient(failure, false),
        _ => FailedWrite::Permanent(failure),
    })
}

/// Whether the SDK refused to send a request because of what the record gave it: a body it
/// cannot serialize (400/20021), or a partition key it cannot use (400/20100 to 20103: empty,
/// too many components, a prefix or an arity the container's key does not take). The SDK's
/// other 400s without an answer are about its own setup.
pub(crate) fn refused_for_the_record(code: u16, sub_status: Option<u16>) -> bool {
    code == 400 && matches!(sub_status, Some(20_021 | 20_100..=20_103))
}

/// A failure of a Cosmos DB write, classified for the inbound side: what reaches it has been
/// retried as far as it could be.
pub(crate) fn cosmos_failure(reason: String) -> Failure {
    Failure::of_kind(COSMOS_FAILURE, reason).marked(ErrorClass::Permanent)
}

#[cfg(test)]
mod tests {
    use azure_core::http::StatusCode;
    use azure_data_cosmos::CosmosStatus;

    use super::*;

    fn unanswered(status: CosmosStatus) -> Option<FailedWrite> {
        let error = CosmosError::builder()
            .with_status(status)
            .with_message("no answer")
            .build();
        judge(&error, "upsert", false)
    }

    #[test]
    fn a_request_the_sdk_refuses_for_the_record_is_its_fault_but_no_answer() {
        for sub_status in [20_021, 20_100, 20_103] {
            assert!(matches!(
                unanswered(CosmosStatus::new(StatusCode::BadRequest).with_sub_status(sub_status)),
                Some(FailedWrite::Refused(_))
            ));
        }
    }

    #[test]
    fn a_request_the_sdk_refuses_for_its_own_setup_is_an_outage() {
        // No HTTP client, a URL without a host, and a refusal that names no reason.
        for status in [
            CosmosStatus::new(StatusCode::BadRequest).with_sub_status(20_153),
            CosmosStatus::new(StatusCode::BadRequest).with_sub_status(20_155),
            CosmosStatus::new(StatusCode::BadRequest),
        ] {
            assert!(matches!(unanswered(status), Some(FailedWrite::Outage(_))));
        }
    }

    #[test]
    fn no_answer_otherwise_is_an_outage() {
        for status in [
            // The SDK's codes for a refused connection and a lost answer.
            CosmosStatus::new(StatusCode::ServiceUnavailable).with_sub_status(20010),
            CosmosStatus::new(StatusCode::ServiceUnavailable).with_sub_status(20011),
            CosmosStatus::new(StatusCode::RequestTimeout),
        ] {
            assert!(matches!(unanswered(status), Some(FailedWrite::Outage(_))));
        }
    }
}
