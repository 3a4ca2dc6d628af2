//! [`EjectionCap`]: at most a share of a set of breakers (a route's endpoints) open at once.

use crate::{BreakerHandle, State, handle::Shared};
use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError, Weak},
};

/// The share of a set of breakers (the endpoints of one route) that may be open at once, as
/// Envoy's outlier detection caps ejections (`max_ejection_percent`): at least one may always
/// open, so a set of one or two still sheds a bad member. When a breaker would trip with the
/// set at its cap, the endpoint failing least stays in the balancer: if the newcomer fails
/// more than the least-failing open one (by failure rate when each tripped), that one closes
/// and the newcomer opens; otherwise the newcomer stays closed, its window cleared, and is
/// judged afresh. Each such decision is counted in
/// `resilience_breaker_ejection_capped_total{name}` and logged.
///
/// The default of sidecar-lite, 50 %, keeps half a route's capacity whatever fails: when more
/// than half the endpoints fail at once, the cause is seldom the endpoints themselves (a shared
/// dependency, the network, this caller), and ejecting more would pile all traffic on the few
/// left. (Envoy's default, 10 %, is for large clusters; for the two to ten endpoints of a
/// typical route it means one.)
///
/// ```
/// use resilience_breaker::{BreakerHandle, EjectionCap, Policy};
///
/// let cap = EjectionCap::new(50.0).unwrap();
/// let breakers: Vec<_> = (0..4)
///     .map(|n| {
///         let breaker = BreakerHandle::new(format!("endpoint-{n}"), Policy::default()).unwrap();
///         cap.join(&breaker);
///         breaker
///     })
///     .collect();
/// assert_eq!(cap.max_open(), 2);
/// # drop(breakers);
/// ```
pub struct EjectionCap {
    percent: f64,
    members: Mutex<Vec<Member>>,
}

struct Member {
    breaker: Weak<Shared>,
    /// The failure rate when it tripped, while the cap counts it as open.
    opened_at_rate: Option<f64>,
}

/// What the cap says of a breaker that would trip.
pub(crate) enum Verdict {
    /// It may open.
    Open,
    /// It may open, and this one, failing less, closes.
    OpenInsteadOf(BreakerHandle),
    /// It stays closed.
    StayClosed,
}

impl EjectionCap {
    /// At most `percent` (0 to 100) of the breakers that [`join`](Self::join) open at once,
    /// and always at least one.
    pub fn new(percent: f64) -> Result<Arc<Self>, crate::ConfigError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(crate::ConfigError::new(
                "max_ejection_percent",
                percent,
                "must be between 0 and 100",
            ));
        }
        Ok(Arc::new(Self {
            percent,
            members: Mutex::new(Vec::new()),
        }))
    }

    /// Puts `breaker` under this cap (a breaker is under one cap at most; joining another
    /// does nothing).
    pub fn join(self: &Arc<Self>, breaker: &BreakerHandle) {
        if breaker.set_cap(self.clone()) {
            let mut members = self.lock();
            members.retain(|m| m.breaker.strong_count() > 0);
            members.push(Member {
                breaker: breaker.downgrade(),
                opened_at_rate: None,
            });
        }
    }

    /// How many of the breakers alive now may be open at once.
    #[must_use]
    pub fn max_open(&self) -> usize {
        let alive = self
            .lock()
            .iter()
            .filter(|m| m.breaker.strong_count() > 0)
            .count();
        self.max_of(alive)
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a count of breakers times a share in [0, 1], floored"
    )]
    fn max_of(&self, alive: usize) -> usize {
        ((alive as f64 * self.percent / 100.0).floor() as usize).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `breaker`, failing at `rate`, would trip: may it?
    pub(crate) fn decide(&self, breaker: &BreakerHandle, rate: f64) -> Verdict {
        let mut members = self.lock();
        members.retain(|m| m.breaker.strong_count() > 0);
        // Members that closed since are no longer counted.
        for member in members.iter_mut() {
            if member.opened_at_rate.is_some()
                && let Some(handle) = BreakerHandle::upgrade(&member.breaker)
                && !matches!(handle.state(), State::Open | State::HalfOpen)
            {
                member.opened_at_rate = None;
            }
        }
        let max = self.max_of(members.len());
        let open = members
            .iter()
            .filter(|m| m.opened_at_rate.is_some())
            .count();
        let me = members.iter().position(|m| breaker.is(&m.breaker));
        if open < max {
            if let Some(me) = me {
                members[me].opened_at_rate = Some(rate);
            }
            return Verdict::Open;
        }
        let least = members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.opened_at_rate.map(|r| (i, r)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match (least, me) {
            (Some((i, least_rate)), Some(me)) if rate > least_rate => {
                let Some(victim) = BreakerHandle::upgrade(&members[i].breaker) else {
                    return Verdict::StayClosed;
                };
                members[i].opened_at_rate = None;
                members[me].opened_at_rate = Some(rate);
                Verdict::OpenInsteadOf(victim)
            }
            _ => Verdict::StayClosed,
        }
    }
}

impl fmt::Debug for EjectionCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EjectionCap")
            .field("percent", &self.percent)
            .field("max_open", &self.max_open())
            .finish()
    }
}
