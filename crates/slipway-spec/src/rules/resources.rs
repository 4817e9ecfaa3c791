//! Rules for a service's `resources:` limits: cpu and memory in Kubernetes quantity
//! notation. (`pids` is a plain positive integer, checked by the schema.)

use serde_json::{Map, Value};

use super::Rules;
use crate::diagnostic::Diagnostic;
use crate::quantity::{self, QuantityError};
use crate::resolve::quantity_text;
use crate::structure::value_kind;

impl Rules<'_> {
    pub(super) fn resources(&mut self, pointer: &str, resources: &Map<String, Value>) {
        if let Some(cpu) = resources.get("cpu") {
            self.quantity(&format!("{pointer}/cpu"), cpu, Kind::Cpu);
        }
        if let Some(memory) = resources.get("memory") {
            self.quantity(&format!("{pointer}/memory"), memory, Kind::Memory);
        }
    }

    fn quantity(&mut self, pointer: &str, value: &Value, kind: Kind) {
        self.owned.insert(pointer.to_owned());
        let pos = self.tree.value_pos(pointer);
        let (field, example) = match kind {
            Kind::Cpu => ("resources.cpu", "`cpu: 0.5` or `cpu: 500m` (half a core)"),
            Kind::Memory => ("resources.memory", "`memory: 512Mi` or `memory: 1Gi`"),
        };
        let text = match value {
            Value::String(_) | Value::Number(_) => quantity_text(value),
            other => {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!("`{field}` must be a quantity, not {}", value_kind(other)),
                    )
                    .hint(format!("write it like {example}")),
                );
                return;
            }
        };
        let written = self
            .tree
            .scalar_text
            .get(pointer)
            .cloned()
            .unwrap_or_else(|| text.clone());
        let result = match kind {
            Kind::Cpu => quantity::parse_cpu(&text).map(|_| ()),
            Kind::Memory => quantity::parse_memory(&text).map(|_| ()),
        };
        let Err(error) = result else {
            return;
        };
        let hint = match (&error, kind) {
            (QuantityError::UnknownSuffix(suffix), Kind::Memory) => format!(
                "`{suffix}` is not a memory unit; use Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T \
                 (powers of 1000), e.g. {example}"
            ),
            (QuantityError::UnknownSuffix(suffix), Kind::Cpu) => format!(
                "`{suffix}` is not a cpu unit; write cores (`0.5`, `2`) or millicores (`250m`), \
                 e.g. {example}"
            ),
            (QuantityError::TooFine, Kind::Cpu) => {
                "the smallest cpu unit is a millicore (`1m`, 0.001 cores)".to_owned()
            }
            (QuantityError::TooFine, Kind::Memory) => {
                "memory is counted in whole bytes; use a unit, e.g. `1.5Gi`".to_owned()
            }
            (QuantityError::Zero, _) => {
                format!(
                    "a limit of 0 would never let an instance run; write e.g. {example}, or leave it out for no limit"
                )
            }
            (QuantityError::TooLarge, _) => {
                format!("that is more than any machine has; write e.g. {example}")
            }
            (QuantityError::Malformed, _) => format!("write it like {example}"),
        };
        self.out.push(
            Diagnostic::at(pos, format!("bad `{field}` quantity `{}`", written.trim())).hint(hint),
        );
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Cpu,
    Memory,
}
