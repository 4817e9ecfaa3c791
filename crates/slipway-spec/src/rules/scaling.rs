//! Rules for the autoscaling windows of a service's `scaling:` section.
//!
//! The panic window detects bursts inside the stable window, so it must be the shorter of
//! the two. A window left out takes its default (60s stable, 6s panic) for this comparison,
//! so `stable_window: 5s` alone is an error: it is shorter than the default panic window.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Rules;
use crate::diagnostic::Diagnostic;
use crate::model::Scaling;

/// One window as found in the file: its value, and its text if it was written.
struct Window {
    value: Duration,
    written: Option<String>,
}

impl Window {
    /// Shows the window in a message: `30s` as written, or `6s, the default`.
    fn show(&self) -> String {
        match &self.written {
            Some(text) => text.trim().to_owned(),
            None => format!("{}, the default", show_duration(self.value)),
        }
    }
}

impl Rules<'_> {
    pub(super) fn scaling_windows(&mut self, pointer: &str, scaling: &Map<String, Value>) {
        if let Some(idle) = scaling.get("idle") {
            self.duration(&format!("{pointer}/idle"), idle, true);
        }
        let defaults = Scaling::default();
        let stable = self.window(pointer, scaling, "stable_window", defaults.stable_window);
        let panic = self.window(pointer, scaling, "panic_window", defaults.panic_window);
        let (Some(stable), Some(panic)) = (stable, panic) else {
            return;
        };
        if panic.value < stable.value {
            return;
        }
        // A tenth of the stable window is the usual panic window (Knative: 6s for 60s),
        // e.g. 3s for `stable_window: 30s`; below 1ms there is nothing to suggest.
        let tenth =
            Duration::from_millis(u64::try_from(stable.value.as_millis() / 10).unwrap_or(u64::MAX));
        let example = if tenth.is_zero() {
            String::new()
        } else {
            format!(", e.g. `panic_window: {}`", show_duration(tenth))
        };
        let problem = if panic.written.is_some() {
            Diagnostic::at(
                self.tree.value_pos(&format!("{pointer}/panic_window")),
                format!(
                    "`scaling.panic_window` ({}) must be shorter than `scaling.stable_window` ({})",
                    panic.show(),
                    stable.show()
                ),
            )
            .hint(format!(
                "the panic window catches bursts within the stable window; shorten it{example}"
            ))
        } else {
            Diagnostic::at(
                self.tree.value_pos(&format!("{pointer}/stable_window")),
                format!(
                    "`scaling.stable_window` ({}) must be longer than `scaling.panic_window` ({})",
                    stable.show(),
                    panic.show()
                ),
            )
            .hint(format!(
                "lengthen it, or set a shorter `panic_window`{example}"
            ))
        };
        self.out.push(problem);
    }

    /// Reads one window: its default if absent, `None` if present but invalid (reported).
    fn window(
        &mut self,
        pointer: &str,
        scaling: &Map<String, Value>,
        key: &str,
        default: Duration,
    ) -> Option<Window> {
        match scaling.get(key) {
            None => Some(Window {
                value: default,
                written: None,
            }),
            Some(value) => {
                let parsed = self.duration(&format!("{pointer}/{key}"), value, false)?;
                Some(Window {
                    value: parsed,
                    written: value.as_str().map(str::to_owned),
                })
            }
        }
    }
}

/// Shows a duration the way `slipway.yaml` writes it: whole seconds as `6s`, anything else
/// in milliseconds (`1500ms`).
pub(crate) fn show_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
