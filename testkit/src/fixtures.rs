//! Tractatus-shaped data: generated `instruction-history.json` documents, the committed
//! fixtures under `tests/fixtures`, and the shell critical section of the exclusion tests.

use serde_json::{Value, json};

/// The state file of the Tractatus framework, relative to the repository root.
pub const HISTORY: &str = ".claude/instruction-history.json";

/// An `instruction-history.json` with `n` alike instructions (`inst_000`...) of about 1 KB
/// each, laid out as Node's `JSON.stringify(x, null, 2)` writes it (n = 140 is about
/// 150 KiB). The integration tests' document.
pub fn instruction_history(n: usize) -> String {
    const QUADRANTS: [&str; 4] = ["STRATEGIC", "OPERATIONAL", "TACTICAL", "SYSTEM"];
    let instructions = (0..n)
        .map(|i| {
            json!({
                "id": format!("inst_{i:03}"),
                "text": format!("Rule {i}: before changing any governance file, check the session state and record the change in the instruction history, so that a later session can audit why it was made and by whom. Never weaken a boundary without an explicit human decision recorded here."),
                "timestamp": "2026-10-01T12:00:00.000Z",
                "quadrant": QUADRANTS[i % 4],
                "persistence": "HIGH",
                "temporal_scope": "PERMANENT",
                "verification_required": "MANDATORY",
                "explicitness": 0.9,
                "source": "user",
                "session_id": "2026-10-01-001",
                "parameters": {"files": [HISTORY, ".claude/session-state.json"], "threshold": 0.75, "max_retries": 3},
                "active": true,
                "notes": "Added after a lost write during two concurrent sessions; keep until the lock is deployed everywhere."
            })
        })
        .collect();
    history("2026-10-01T12:00:00.000Z", instructions)
}

/// Like [`instruction_history`], but with instructions `inst_001`..=`n` whose dates, quadrants,
/// scopes and sources vary, as a real history's do. The benchmark's document.
pub fn instruction_history_varied(n: usize) -> String {
    const QUADRANTS: [&str; 5] = [
        "STRATEGIC",
        "OPERATIONAL",
        "TACTICAL",
        "SYSTEM",
        "STOCHASTIC",
    ];
    let instructions = (1..=n)
        .map(|i| {
            json!({
                "id": format!("inst_{i:03}"),
                "text": format!(
                    "Rule {i}: before changing any governance file, read the current session \
                     state and record the change here, so that a later session can audit why \
                     it was made and by whom. Never weaken a boundary without an explicit human \
                     decision recorded in this history. Run the pre-action check before \
                     deploying, and stop if two sessions edit the same file at once."
                ),
                "timestamp": format!("2026-{:02}-{:02}T{:02}:{:02}:00.000Z", 1 + i % 11, 1 + i % 28, i % 24, i % 60),
                "quadrant": QUADRANTS[i % QUADRANTS.len()],
                "persistence": "HIGH",
                "temporal_scope": if i % 3 == 0 { "PROJECT" } else { "PERMANENT" },
                "verification_required": "MANDATORY",
                "explicitness": 0.9,
                "source": if i % 4 == 0 { "framework" } else { "user" },
                "session_id": format!("2026-{:02}-{:02}-{:03}", 1 + i % 11, 1 + i % 28, i % 7),
                "parameters": {
                    "files": [HISTORY, ".claude/session-state.json"],
                    "threshold": 0.75,
                    "max_retries": 3,
                    "scope": "repository"
                },
                "active": true,
                "notes": "Added after a lost write between two concurrent sessions; keep until \
                          the lock is deployed on every machine."
            })
        })
        .collect();
    history("2026-11-20T10:00:00.000Z", instructions)
}

/// The document around the instructions. `to_string_pretty` writes what `JSON.stringify(x,
/// null, 2)` writes for such ASCII documents: 2-space indentation, `": "`, no final newline.
fn history(last_updated: &str, instructions: Vec<Value>) -> String {
    let doc = json!({
        "version": "3.5",
        "last_updated": last_updated,
        "description": "Persistent instruction database for Tractatus framework governance",
        "instructions": instructions,
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
}

/// The committed fixture `tests/fixtures/NAME` of the `tractatus-lock` package.
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The critical section the mutual-exclusion tests run under a lock: a plain read-add-write of
/// a counter file (no atomic tricks), an O_EXCL marker that detects overlap, and the fencing
/// token appended to a list. `$1` is the directory holding `counter`.
pub const CRITICAL: &str = r#"
d="$1"
if ! (set -C; : > "$d/inside") 2>/dev/null; then echo overlap >> "$d/overlaps"; fi
n=$(cat "$d/counter")
echo $((n + 1)) > "$d/counter"
echo "$TRACTATUS_FENCING_TOKEN" >> "$d/tokens"
rm -f "$d/inside"
"#;
