//! Status conditions. Pure functions so the "transition time changes only on
//! a real transition" rule is unit-tested without a cluster.

use crate::crd::Condition;

/// Condition types.
pub const READY: &str = "Ready";
pub const REDIS_READY: &str = "RedisReady";
pub const SERVER_READY: &str = "ServerReady";

/// Sets condition `type_`, keeping `lastTransitionTime` unless `status`
/// changes. Returns whether `status` changed (a transition worth an Event).
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &str,
    generation: Option<i64>,
) -> bool {
    let status = if ok { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status;
            if changed {
                c.last_transition_time = now.to_string();
                c.status = status.to_string();
            }
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: now.to_string(),
                observed_generation: generation,
            });
            true
        }
    }
}

/// Current status of condition `type_` ("True"/"False"), if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        assert!(set(
            &mut c,
            READY,
            false,
            "Progressing",
            "waiting",
            "t1",
            Some(1)
        ));
        assert!(!set(
            &mut c,
            READY,
            false,
            "Progressing",
            "still waiting",
            "t2",
            Some(1)
        ));
        assert_eq!(c[0].last_transition_time, "t1");
        assert_eq!(c[0].message, "still waiting");
        assert!(set(&mut c, READY, true, "Ready", "all good", "t3", Some(2)));
        assert_eq!(c[0].last_transition_time, "t3");
        assert_eq!(c[0].observed_generation, Some(2));
        assert_eq!(get(&c, READY), Some("True"));
        assert_eq!(c.len(), 1);
    }
}
