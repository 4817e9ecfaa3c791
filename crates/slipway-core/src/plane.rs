//! Which plane a thread belongs to.
//!
//! The data plane (the router: accept, proxy, record figures) must never wait for the
//! control plane: a SQLite commit with `synchronous=FULL`, a `fork()` of a large process or
//! a log write that hits a slow disk blocks the whole worker thread it runs on, and every
//! request queued on that worker waits with it. So the router gets threads of its own, and
//! the blocking work asserts it is not on one of them.

use std::cell::Cell;

thread_local! {
    static DATA_PLANE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one of the router's (call it from the data-plane runtime's
/// `on_thread_start`).
pub fn enter_data_plane() {
    DATA_PLANE.with(|d| d.set(true));
}

/// Whether the calling thread is one of the router's.
pub fn on_data_plane() -> bool {
    DATA_PLANE.with(Cell::get)
}

/// In debug builds, aborts the process if the calling thread is one of the router's: `what`
/// (such as "a store call") would block requests. Release builds check nothing.
///
/// An abort rather than a panic: tokio would catch a panic in the router's connection task
/// and only that request would fail, which a test might not notice; a server that dies
/// fails every test that touches it, with this message in its log.
#[track_caller]
pub fn assert_control_plane(what: &str) {
    if cfg!(debug_assertions) && on_data_plane() {
        eprintln!(
            "{what} on a router thread ({}, at {}): the data plane must never block on control-plane work",
            std::thread::current().name().unwrap_or("unnamed"),
            std::panic::Location::caller()
        );
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_threads_are_data_plane() {
        assert!(!on_data_plane());
        assert_control_plane("a test");
        let marked = std::thread::spawn(|| {
            enter_data_plane();
            on_data_plane()
        })
        .join()
        .unwrap();
        assert!(marked);
        assert!(!on_data_plane(), "the mark is per thread");
    }

    /// Run in a child process by the test below: aborts.
    #[test]
    fn abort_on_a_marked_thread() {
        if std::env::var_os("SLIPWAY_PLANE_CHILD").is_none() {
            return;
        }
        std::thread::spawn(|| {
            enter_data_plane();
            assert_control_plane("a store call");
        })
        .join()
        .unwrap();
    }

    #[test]
    #[cfg(debug_assertions)]
    fn control_plane_work_on_a_router_thread_aborts_the_process() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "plane::tests::abort_on_a_marked_thread",
                "--nocapture",
            ])
            .env("SLIPWAY_PLANE_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("a store call on a router thread"),
            "{stderr}"
        );
    }
}
