//! The instance sequence of the `rolling` strategy: replace old instances with new ones one
//! at a time, with at most one extra instance and no loss of serving capacity.

/// The sequence of `(old instances, new instances)` counts a rolling deploy goes through,
/// from `(old, 0)` to `(0, new)`, both included.
///
/// Max surge 1: there are never more than `max(old, new) + 1` instances. Max unavailable 0:
/// an old instance is stopped only once the instances left still number at least
/// `min(old, new)`, so capacity never drops below what either revision should have. The
/// executor waits for each new instance to be ready before moving to the next pair.
///
/// For 3 -> 3 (cap 4): (3,0) (3,1) (2,1) (2,2) (1,2) (1,3) (0,3): start one new instance,
/// stop one old, and so on; 3 instances serve at every moment.
///
/// The plan is about `2 x max(old, new) + 1` pairs long. For comparison,
/// [`Strategy::Recreate`](crate::Strategy::Recreate) is `[(old, 0), (0, 0), (0, new)]`, with
/// downtime at `(0, 0)`.
pub fn rolling_plan(old: u32, new: u32) -> Vec<(u32, u32)> {
    let cap = u64::from(old.max(new)) + 1;
    let (mut o, mut n) = (old, 0u32);
    let mut plan = vec![(o, n)];
    while o > 0 || n < new {
        // Start a new instance while there is room under the cap; otherwise stop an old one
        // (there is always one: below the cap with new instances missing means room, so at
        // the cap with new instances missing, old ones fill the gap), and when all new
        // instances run, stop the remaining old ones.
        if n < new && u64::from(o) + u64::from(n) < cap {
            n += 1;
        } else if o > 0 {
            o -= 1;
        } else {
            n += 1;
        }
        plan.push((o, n));
    }
    plan
}
