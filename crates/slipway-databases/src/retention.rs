//! When a scheduled backup is due and which backups `keep` lets go: pure functions of times
//! and lists, no clock, no I/O.

/// Whether a scheduled backup is due at `now` (ms since the epoch), with `every` ms between
/// attempts and the last attempt (successful or not) at `last`. The first is due at once.
pub fn due(last: Option<u64>, now: u64, every: u64) -> bool {
    match last {
        None => true,
        // A clock that went back still waits one period from now at most.
        Some(last) => now.saturating_sub(last) >= every || last > now.saturating_add(every),
    }
}

/// The backups to delete so that the `keep` newest remain: `backups` are (id, created ms);
/// ties are broken by id so the answer does not depend on the input's order. `keep: 0` keeps
/// nothing back from deletion except what the caller excludes.
pub fn to_prune(backups: &[(String, u64)], keep: usize) -> Vec<String> {
    let mut sorted: Vec<&(String, u64)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    sorted
        .into_iter()
        .skip(keep)
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_backup_is_due_at_once_then_one_period_after_the_last_attempt() {
        assert!(due(None, 1_000, 60_000));
        assert!(!due(Some(1_000), 60_999, 60_000));
        assert!(due(Some(1_000), 61_000, 60_000));
        // A failed attempt counts as an attempt: no retry storm, the next one a period later.
        assert!(!due(Some(61_000), 61_001, 60_000));
    }

    #[test]
    fn a_clock_that_jumped_back_does_not_stop_backups_forever() {
        assert!(!due(Some(100_000), 90_000, 60_000));
        assert!(due(Some(1_000_000), 90_000, 60_000));
    }

    #[test]
    fn keep_leaves_the_newest_and_prunes_the_rest_whatever_the_order() {
        let backups: Vec<(String, u64)> = [("c", 30), ("a", 10), ("d", 40), ("b", 20)]
            .iter()
            .map(|(id, t)| ((*id).to_owned(), *t))
            .collect();
        assert_eq!(to_prune(&backups, 2), ["b", "a"]);
        assert_eq!(to_prune(&backups, 4), Vec::<String>::new());
        assert_eq!(to_prune(&backups, 10), Vec::<String>::new());
        assert_eq!(to_prune(&backups, 0).len(), 4);
        let tied = vec![("x".to_owned(), 5), ("y".to_owned(), 5)];
        assert_eq!(to_prune(&tied, 1), ["x"]);
    }
}
