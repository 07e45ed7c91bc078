//! AgentProcess against ordinary programs (the agent's own tests use the vigil binary).

use std::time::Duration;

use vigil_test_harness::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn captures_stdout_and_stderr_lines_and_waits_for_them() {
    let mut p = AgentProcess::spawn(
        "sh",
        ["-c", "echo out-$GREETING; echo err-line >&2; exec sleep 30"],
        [("GREETING", "hi")],
    )
    .unwrap();
    assert_eq!(p.wait_for_line(|l| l.starts_with("out-"), T).unwrap(), "out-hi");
    p.wait_for_line(|l| l == "err-line", T).unwrap();
    assert!(p.try_wait().unwrap().is_none());
    let status = p.kill_9().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
}

#[test]
fn terminate_and_exit_status() {
    let mut p = AgentProcess::spawn(
        "sh",
        ["-c", "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 0.05; done"],
        std::iter::empty::<(&str, &str)>(),
    )
    .unwrap();
    p.wait_for_line(|l| l == "ready", T).unwrap();
    p.terminate().unwrap();
    assert_eq!(p.wait_timeout(T).unwrap().code(), Some(3));
    p.wait_for_line(|l| l == "bye", T).unwrap();
}

#[test]
fn waiting_on_a_process_that_exits_fails_fast() {
    let p = AgentProcess::spawn("sh", ["-c", "echo only"], std::iter::empty::<(&str, &str)>())
        .unwrap();
    let t0 = std::time::Instant::now();
    let err = p.wait_for_line(|l| l == "never", Duration::from_secs(30)).unwrap_err();
    assert!(matches!(err, HarnessError::Exited { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("only"));
}

#[test]
fn missing_binary_is_a_clear_error() {
    let err = AgentProcess::spawn("/nonexistent/vigil", [""; 0], std::iter::empty::<(&str, &str)>())
        .err()
        .unwrap();
    assert!(matches!(err, HarnessError::MissingProgram { .. }), "{err}");
}
