//! The `millm` binary on a pseudo-terminal, through `tests/clients/pty_run.py` (Python's
//! standard `pty` module): type, press Ctrl-C or Ctrl-D, wait for what the terminal shows.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one expectation may take: a debug build on two busy cores loads and answers slowly.
const EXPECT_WITHIN: Duration = Duration::from_secs(90);

/// Ctrl-C and Ctrl-D as the terminal receives them.
pub const CTRL_C: &str = "\u{3}";
pub const CTRL_D: &str = "\u{4}";

/// A `millm` command running on a terminal of its own.
pub struct Terminal {
    driver: Child,
    requests: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

/// How the command ended.
pub struct Exit {
    pub code: Option<i32>,
    pub output: String,
}

/// The Python that runs the driver: the test venv's when the test command set one, else any
/// `python3` (the driver needs only the standard library).
fn python() -> String {
    std::env::var("MILLM_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

impl Terminal {
    /// `millm --url URL ARGS…` with `env` added and no `MILLM_*`/`HF_TOKEN` from this process.
    pub fn spawn(url: &str, args: &[&str], env: &[(&str, &str)]) -> Terminal {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pty_run.py");
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .arg(env!("CARGO_BIN_EXE_millm"))
            .arg("--url")
            .arg(url)
            .args(args)
            .env_remove("HF_TOKEN")
            .env_remove("MILLM_URL")
            .env_remove("MILLM_API_KEY")
            .env("TERM", "xterm")
            .envs(env.iter().copied())
            // No `.env` from the repository is read: the CLI runs in the temp folder.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut driver = cmd.spawn().expect("the pty driver starts (python3)");
        let requests = driver.stdin.take().expect("piped stdin");
        let answers = BufReader::new(driver.stdout.take().expect("piped stdout")).lines();
        Terminal {
            driver,
            requests,
            answers,
        }
    }

    async fn call(&mut self, request: Value) -> Value {
        let mut line = request.to_string();
        line.push('\n');
        self.requests
            .write_all(line.as_bytes())
            .await
            .expect("the driver reads requests");
        // The driver answers within the request's own timeout; this only guards a stuck driver.
        let answer = tokio::time::timeout(EXPECT_WITHIN * 2, self.answers.next_line())
            .await
            .expect("the pty driver answers")
            .expect("the driver's stdout is readable")
            .expect("the driver answers before it exits");
        serde_json::from_str(&answer).expect("the driver answers JSON")
    }

    /// Waits until the output after the last match matches `pattern` (a Python regex); returns
    /// its groups. Panics with the whole output when it does not come.
    pub async fn expect(&mut self, pattern: &str) -> Vec<String> {
        let answer = self
            .call(json!({"expect": pattern, "timeout": EXPECT_WITHIN.as_secs()}))
            .await;
        assert_eq!(
            answer["ok"],
            true,
            "the terminal never showed /{pattern}/; it shows:\n{}",
            answer["output"].as_str().unwrap_or_default()
        );
        answer["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Types `text` (a line ends with "\n"; `CTRL_C`, `CTRL_D`).
    pub async fn send(&mut self, text: &str) {
        let answer = self.call(json!({ "send": text })).await;
        assert_eq!(answer["ok"], true, "{answer}");
    }

    /// Waits for the command to exit.
    pub async fn exit(mut self) -> Exit {
        let answer = self.call(json!({"wait": EXPECT_WITHIN.as_secs()})).await;
        let output = answer["output"].as_str().unwrap_or_default().to_string();
        assert_eq!(answer["ok"], true, "the command did not exit: {output}");
        drop(self.requests);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.driver.wait()).await;
        Exit {
            code: answer["code"].as_i64().map(|c| c as i32),
            output,
        }
    }
}
