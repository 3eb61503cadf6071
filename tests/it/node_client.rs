//! The Node client (`clients/node`) is tested by its own suite, `npm test` (`tsc`, then
//! `node --test`), which starts the `herald` binary this build made. This test runs that
//! suite, so that the one test command covers the client too.
//!
//! The suite needs `clients/node/node_modules` (`npm ci`, which `.ci/run` does). Without
//! it the test is skipped with a message, except under `CI=true`, where it fails.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_node_clients_own_tests_pass_against_the_herald_binary() {
    let client = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/node");
    if !client.join("node_modules/.bin/tsc").exists() {
        crate::support::tool_missing(&format!(
            "the Node client's packages are not installed in {}; run \
             `npm ci --prefix clients/node` (or .ci/run)",
            client.display()
        ));
        return;
    }
    let run = Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(&client)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        // Herald's own settings in this environment are not the suite's.
        .env_remove("RABBITMQ_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("npm runs (Node 18 or later, with npm, must be installed)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the Node client's tests failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    // It did run tests, and none was skipped.
    assert!(stdout.contains("fail 0"), "{stdout}");
    assert!(stdout.contains("skipped 0"), "{stdout}");
}
