//! What a program is started with: its account (privilege drop), its environment (with the
//! secrets of `/etc/environment` held back), and a GPU when it needs one.

mod supervisor_harness;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use supervisor_harness::Up;
use vastgate::supervisor::{ExitReason, GpuReport, ProgramState};

const TEST_USER: &str = "vgtest";
const TEST_GROUP: &str = "vgtestgrp";

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure the test account exists (with a supplementary group); false when that cannot be.
fn ensure_test_user() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    if !run("id", &["-u", TEST_USER]) {
        let _ = run("groupadd", &["-f", TEST_GROUP]);
        if !run(
            "useradd",
            &["-M", "-s", "/bin/sh", "-G", TEST_GROUP, TEST_USER],
        ) && !run("id", &["-u", TEST_USER])
        {
            return false;
        }
    }
    run("id", &["-u", TEST_USER])
}

fn id_of(flag: &str) -> String {
    let out = Command::new("id")
        .args([flag, TEST_USER])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn log_of(up: &Up, name: &str, marker: &str) -> String {
    supervisor_harness::eventually(&format!("{name} printed {marker}"), || {
        std::fs::read_to_string(up.path(&format!("logs/{name}.log")))
            .is_ok_and(|l| l.contains(marker))
    });
    std::fs::read_to_string(up.path(&format!("logs/{name}.log"))).unwrap_or_default()
}

#[test]
fn a_program_runs_as_its_user_with_groups_and_login_variables() {
    if !ensure_test_user() {
        eprintln!(
            "SKIPPED a_program_runs_as_its_user_with_groups_and_login_variables: \
             needs root to create the test user {TEST_USER}"
        );
        return;
    }
    let up = Up::start(&format!(
        r#"
[program.dropped]
command = ["sh", "-c", "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo user=$USER logname=$LOGNAME; echo done; exec sleep 1000"]
user = "{TEST_USER}"
"#
    ));
    let log = log_of(&up, "dropped", "done");
    assert!(
        log.contains(&format!("uid={} gid={}", id_of("-u"), id_of("-g"))),
        "{log}"
    );
    let groups_line = log
        .lines()
        .find(|l| l.starts_with("uid="))
        .unwrap_or_default();
    let groups: Vec<&str> = groups_line
        .split("groups=")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut want: Vec<String> = id_of("-G").split_whitespace().map(String::from).collect();
    want.sort();
    let mut got: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    got.sort();
    assert_eq!(
        got, want,
        "supplementary groups as `id -G {TEST_USER}` lists them"
    );
    assert!(
        !got.contains(&"0".to_string()),
        "root's group is dropped: {got:?}"
    );
    assert!(
        log.contains(&format!("user={TEST_USER} logname={TEST_USER}")),
        "{log}"
    );
}

#[test]
fn an_unknown_user_is_reported_not_crashed_on() {
    let up = Up::start(
        r#"
[program.ghost]
command = ["true"]
user = "no-such-user-here"
restart = "on-failure"
start_retries = 0
"#,
    );
    let p = up.wait_program("ghost", "FATAL", |p| p.state == ProgramState::Fatal);
    match p.last_exit {
        Some(ExitReason::SpawnFailed { error }) => {
            assert!(error.contains("no user \"no-such-user-here\""), "{error}")
        }
        other => panic!("expected a spawn failure, got {other:?}"),
    }
}

#[test]
fn environment_file_is_read_but_secrets_pass_only_when_named() {
    let up = Up::prepare("", "");
    std::fs::write(
        up.path("environment"),
        "PASSWORD=\"hunter2\"\nOPEN_BUTTON_TOKEN=tok123\nDATA_DIRECTORY=/workspace/\nSHARED=from-file\n",
    )
    .expect("environment file");
    let config = supervisor_harness::config_text(
        "environment_file = \"environment\"",
        r#"
[program.plain]
command = ["sh", "-c", "echo data=$DATA_DIRECTORY shared=$SHARED pw=[$PASSWORD] tok=[$OPEN_BUTTON_TOKEN]; echo done; exec sleep 1000"]
env = { SHARED = "from-env" }

[program.named]
command = ["sh", "-c", "echo jupyter=$JUPYTER_TOKEN; echo done; exec sleep 1000"]
env = { JUPYTER_TOKEN = "${OPEN_BUTTON_TOKEN}" }
"#,
    );
    std::fs::write(&up.config, config).expect("config");
    let up = up.launch(Command::new(supervisor_harness::vastgate_bin()));
    let plain = log_of(&up, "plain", "done");
    assert!(
        plain.contains("data=/workspace/ shared=from-env pw=[] tok=[]"),
        "{plain}"
    );
    let named = log_of(&up, "named", "done");
    assert!(named.contains("jupyter=tok123"), "{named}");
}

/// A stand-in `nvidia-smi` that answers from the fixtures once `gpu-present` exists.
fn fake_nvidia_smi(up: &Up) -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nvidia-smi");
    let dir = up.dir.path().display().to_string();
    let script = format!(
        "#!/bin/sh\n[ -f {dir}/gpu-present ] || {{ echo 'No devices were found'; exit 6; }}\n\
         case \"$1\" in --query-gpu=*) cat {fixtures}/query-h200.csv ;; *) cat {fixtures}/banner-h200.txt ;; esac\n"
    );
    let path = up.path("fake-nvidia-smi");
    std::fs::write(&path, script).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

#[test]
fn a_program_that_requires_a_gpu_waits_for_one() {
    let up = Up::prepare("", "");
    let smi = fake_nvidia_smi(&up);
    let config = supervisor_harness::config_text(
        &format!("nvidia_smi = \"{smi}\""),
        r#"
[program.forge]
command = ["sleep", "1000"]
gpu = "required"
gpu_wait = "60s"
ready_after = "100ms"
"#,
    );
    std::fs::write(&up.config, config).expect("config");
    let up = up.launch(Command::new(supervisor_harness::vastgate_bin()));
    let waiting = up.wait_program("forge", "waiting for a GPU", |p| {
        p.detail.contains("waiting for a GPU")
    });
    assert_eq!(waiting.state, ProgramState::Starting);
    assert!(
        waiting.detail.contains("No devices were found"),
        "{waiting:?}"
    );
    assert_eq!(waiting.pid, None);

    std::fs::write(up.path("gpu-present"), "").expect("flag");
    up.wait_program("forge", "RUNNING", |p| p.state == ProgramState::Running);
    let out = up.cli(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let gpu: GpuReport = serde_json::from_value(json["gpu"].clone()).expect("GPU report");
    assert_eq!(
        gpu.summary(),
        "1 × NVIDIA H200 (143771 MiB), driver 550.127.05, CUDA 12.4"
    );
}

#[test]
fn a_hanging_nvidia_smi_is_killed_and_a_required_gpu_times_out_to_fatal() {
    let up = Up::prepare("", "");
    let smi = up.path("hanging-nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\nexec sleep 1000\n").expect("script");
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = supervisor_harness::config_text(
        &format!(
            "nvidia_smi = \"{}\"\ngpu_timeout = \"300ms\"",
            smi.display()
        ),
        r#"
[program.forge]
command = ["sleep", "1000"]
gpu = "required"
gpu_wait = "1500ms"

[program.helper]
command = ["sleep", "1000"]
"#,
    );
    std::fs::write(&up.config, config).expect("config");
    let up = up.launch(Command::new(supervisor_harness::vastgate_bin()));
    let p = up.wait_program("forge", "FATAL", |p| p.state == ProgramState::Fatal);
    match p.last_exit {
        Some(ExitReason::NoGpu { error }) => assert!(error.contains("did not answer"), "{error}"),
        other => panic!("expected no GPU, got {other:?}"),
    }
    let helper = up.program("helper");
    assert_eq!(
        helper.state,
        ProgramState::Running,
        "everything else carries on"
    );
}
