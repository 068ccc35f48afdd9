//! A client-side budget for an AWS operation with a low account-wide quota: DescribeLogStreams,
//! which the `DataFlowing` check calls once per quiet log group, is limited to 25 calls a second
//! per account and Region, shared by everyone in the account (consoles, scripts, other tools).
//! Without a budget, 1,000 pipelines whose collectors became ready within minutes sent about 16
//! a second for ten minutes (bench run AO: 9,712 calls), most of the account's quota.
//!
//! The budget is a meter, not a queue: a caller that finds it spent is not made to wait (a
//! waiting reconcile would hold one of the controller's slots, and pipelines being created would
//! wait behind data-flow checks). It is given a time instead, its reservation: the budget counts
//! the calls as made at that time, and the caller comes back then and makes them. Reservations
//! are handed out one after the other, `calls / rate` apart, so the callers that found the budget
//! spent come back spread out in the order they asked, never all at once, and none is overtaken
//! by later ones (generic cell rate algorithm: a theoretical arrival time that moves on by
//! `calls / rate` for every grant).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after its time a reservation lapses when its caller did not come back for it (the
/// pipeline was deleted, its collector stopped being ready, or its reconcile waited in the queue):
/// a caller coming back later asks anew, so calls counted long ago are not made now on top of
/// the calls counted for now.
const LAPSE: Duration = Duration::from_secs(120);

/// Calls of one operation a second, with bursts of one second's worth.
#[derive(Debug)]
pub struct CallBudget {
    /// Seconds one call takes of the budget (1 / rate); `None`: no budget.
    per_call: Option<Duration>,
    /// How far ahead of now the budget may be spent before callers get reservations: one
    /// second's worth of calls (at least one call).
    burst: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the budget is spent up to (the theoretical arrival time); in the past when idle.
    spent_until: Option<Instant>,
    /// Reservations by caller (a pipeline's uid): when its calls may be made.
    reserved: HashMap<String, Instant>,
}

impl CallBudget {
    /// A budget of `per_second` calls a second; 0 (or not finite) means no budget.
    pub fn per_second(per_second: f64) -> CallBudget {
        // A rate too small for a Duration is refused by the flag's parser (`controller::run`).
        let per_call = (per_second.is_finite() && per_second > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / per_second).ok())
            .flatten();
        CallBudget {
            per_call,
            burst: per_call.map_or(Duration::ZERO, |c| c.max(Duration::from_secs(1))),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether `caller` may make `calls` calls now: `Ok` (they are counted), or `Err(wait)`: not
    /// before `wait` from `now`, when the calls are counted for the caller already (a reservation
    /// it takes up by asking again then; asking before then gives the rest of the wait).
    pub fn take(&self, caller: &str, calls: u32, now: Instant) -> Result<(), Duration> {
        let Some(per_call) = self.per_call else {
            return Ok(());
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = s.reserved.get(caller).copied() {
            if at > now {
                return Err(at - now);
            }
            s.reserved.remove(caller);
            if now - at <= LAPSE {
                return Ok(());
            }
        }
        let cost = per_call.saturating_mul(calls.max(1));
        let start = s.spent_until.map_or(now, |t| t.max(now));
        s.spent_until = Some(start + cost);
        // Granted now while no more than a burst is spent ahead of now (this grant's own cost
        // included, except that a grant larger than a burst goes through on an idle budget).
        let ahead = start + cost - now;
        if ahead <= self.burst || start == now {
            return Ok(());
        }
        let at = start + cost - self.burst;
        s.reserved.retain(|_, t| *t + LAPSE >= now);
        s.reserved.insert(caller.to_string(), at);
        Err(at - now)
    }

    /// Forgets `caller`'s reservation (the pipeline is gone).
    pub fn forget(&self, caller: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.reserved.remove(caller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_budget_grants_everything() {
        let b = CallBudget::per_second(0.0);
        let now = Instant::now();
        for i in 0..1000 {
            assert_eq!(b.take(&format!("p{i}"), 2, now), Ok(()));
        }
        assert!(b.per_call.is_none());
        assert!(CallBudget::per_second(f64::NAN).per_call.is_none());
    }

    #[test]
    fn a_burst_of_one_seconds_worth_goes_at_once_and_the_rest_get_spaced_reservations() {
        let b = CallBudget::per_second(4.0);
        let t0 = Instant::now();
        // 4 calls a second: two pipelines of two groups each fit the burst.
        assert_eq!(b.take("a", 2, t0), Ok(()));
        assert_eq!(b.take("b", 2, t0), Ok(()));
        // The next ones are spaced 0.5 s apart (two calls each), in the order they asked.
        assert_eq!(b.take("c", 2, t0), Err(ms(500)));
        assert_eq!(b.take("d", 2, t0), Err(ms(1000)));
        assert_eq!(b.take("e", 2, t0), Err(ms(1500)));
        // Asking again early gives the rest of the wait and spends nothing more.
        assert_eq!(b.take("c", 2, t0 + ms(200)), Err(ms(300)));
        assert_eq!(b.take("f", 2, t0), Err(ms(2000)));
        // At its time, the reservation is taken up; it is gone after that.
        assert_eq!(b.take("c", 2, t0 + ms(500)), Ok(()));
        assert!(!b.state.lock().unwrap().reserved.contains_key("c"));
    }

    #[test]
    fn calls_granted_over_any_window_stay_within_the_rate_and_one_burst() {
        // 50 pipelines ask every 100 ms and make their calls when granted: over 30 s, at most
        // rate × 30 + burst calls are granted, and every pipeline is served.
        let b = CallBudget::per_second(5.0);
        let t0 = Instant::now();
        let mut due: Vec<Option<Instant>> = vec![Some(t0); 50];
        let mut granted = 0u32;
        let mut served = vec![0u32; 50];
        for step in 0..300 {
            let now = t0 + Duration::from_millis(100 * step);
            for (i, d) in due.iter_mut().enumerate() {
                if d.is_some_and(|t| t <= now) {
                    match b.take(&format!("p{i}"), 2, now) {
                        Ok(()) => {
                            granted += 2;
                            served[i] += 1;
                            *d = Some(now + ms(20000));
                        }
                        Err(w) => *d = Some(now + w),
                    }
                }
            }
        }
        assert!(granted <= 5 * 30 + 5, "{granted} calls granted in 30 s at 5 a second");
        assert!(
            served.iter().all(|n| *n >= 1),
            "every pipeline got its read: {served:?}"
        );
    }

    #[test]
    fn a_reservation_taken_up_long_after_its_time_is_asked_anew() {
        let b = CallBudget::per_second(1.0);
        let t0 = Instant::now();
        assert_eq!(b.take("a", 1, t0), Ok(()));
        assert_eq!(b.take("late", 1, t0), Err(ms(1000)));
        // Back within the lapse: its reservation holds.
        let c = CallBudget::per_second(1.0);
        assert_eq!(c.take("a", 1, t0), Ok(()));
        assert_eq!(c.take("late", 1, t0), Err(ms(1000)));
        assert_eq!(c.take("late", 1, t0 + ms(1000) + LAPSE), Ok(()));
        // Past it: asked anew, against what is spent now.
        let later = t0 + ms(1000) + LAPSE + ms(1);
        assert_eq!(b.take("busy", 1, later), Ok(()));
        assert_eq!(b.take("late", 1, later), Err(ms(1000)));
    }

    #[test]
    fn an_idle_budget_lets_a_read_larger_than_a_burst_through() {
        let b = CallBudget::per_second(1.0);
        let t0 = Instant::now();
        assert_eq!(b.take("big", 5, t0), Ok(()));
        // It is paid for afterwards: the next caller waits for it.
        assert_eq!(b.take("next", 1, t0), Err(ms(5000)));
    }

    #[test]
    fn stale_and_forgotten_reservations_are_dropped() {
        let b = CallBudget::per_second(1.0);
        let t0 = Instant::now();
        assert_eq!(b.take("a", 1, t0), Ok(()));
        assert!(b.take("gone", 1, t0).is_err());
        assert!(b.take("deleted", 1, t0).is_err());
        b.forget("deleted");
        assert!(!b.state.lock().unwrap().reserved.contains_key("deleted"));
        // Much later, a new reservation sweeps the one nobody came back for.
        let later = t0 + LAPSE + ms(10000);
        assert_eq!(b.take("x", 1, later), Ok(()));
        assert!(b.take("y", 1, later).is_err());
        let s = b.state.lock().unwrap();
        assert!(!s.reserved.contains_key("gone"));
        assert!(s.reserved.contains_key("y"));
    }
}
