//! The image's launch modes, proven with the real, unmodified scripts of `docker/` in a throwaway
//! root: a mount and network namespace with an overlay over the machine's `/` (nothing of the
//! real `/` is written), the image's files laid out by `docker/install.sh`, and stand-ins only for
//! what cannot exist here (Forge, filebrowser, ttyd, logdy, nvidia-smi; `tests/image/`). Each
//! container start is a fresh PID namespace chrooted into that root, so the scripts write the
//! copy's real `/etc/environment`, `/root/onstart.sh` and `/var/log/...`, and what they leave
//! survives into the next start, as a container's writable layer does across `docker stop/start`.
//!
//! Needs root (namespaces, mounts). Elsewhere the tests say loudly that they were skipped, except
//! under `CI=true`, where that is a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long anything that should happen "soon" may take on a slow, shared machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (loudly) or, under CI, fails.
fn cannot_run(why: &str) {
    if in_ci() {
        panic!("the launch-mode tests cannot run: {why}");
    }
    eprintln!("SKIPPED: the launch-mode tests need {why}");
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// The throwaway root and the namespaces it lives in (`tests/image/sandbox.sh`).
struct Sandbox {
    dir: tempfile::TempDir,
    holder: Child,
    boots: u32,
}

impl Sandbox {
    fn open() -> Option<Sandbox> {
        if unsafe { libc::geteuid() } != 0 {
            cannot_run("root (mount and network namespaces, an overlay over /)");
            return None;
        }
        let repo = env!("CARGO_MANIFEST_DIR");
        let dir = tempfile::Builder::new()
            .prefix("vastgate-image-")
            .tempdir()
            .expect("temp dir");
        let log = File::create(dir.path().join("sandbox.log")).expect("log file");
        let holder = Command::new("unshare")
            .args(["--mount", "--net", "--kill-child", "--", "bash"])
            .arg(Path::new(repo).join("tests/image/sandbox.sh"))
            .arg(dir.path())
            .arg(repo)
            .arg(env!("CARGO_BIN_EXE_vastgate"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn();
        let mut holder = match holder {
            Ok(h) => h,
            Err(e) => {
                cannot_run(&format!("util-linux's unshare ({e})"));
                return None;
            }
        };
        let start = Instant::now();
        while !dir.path().join("ready").exists() {
            if let Ok(Some(status)) = holder.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("sandbox.log"));
                cannot_run(&format!(
                    "a throwaway root (sandbox.sh {status}): {}",
                    log.unwrap_or_default()
                ));
                return None;
            }
            assert!(start.elapsed() < PATIENCE, "the sandbox did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Sandbox {
            dir,
            holder,
            boots: 0,
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Reads a file of the throwaway root ("" when it does not exist). The root is mounted in the
    /// sandbox's mount namespace only, so it is read from there.
    fn read(&self, path: &str) -> String {
        let out = self.sh(&format!("cat -- {} 2>/dev/null", shell_quote(path)));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a bash script in the throwaway root (outside any container's PID namespace), with a
    /// clean environment.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.holder.id().to_string(),
                "-m",
                "-n",
                "--",
                "chroot",
            ])
            .arg(self.root())
            .args([
                "/usr/bin/env",
                "-i",
                &format!("PATH={PATH}"),
                "bash",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `curl` in the sandbox's network namespace: (status, body).
    fn curl(&self, path: &str, user: Option<(&str, &str)>) -> (u16, String) {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-n", "--", "curl"])
            .args(["-s", "-m", "20", "-w", "\n%{http_code}"]);
        if let Some((u, p)) = user {
            cmd.args(["-u", &format!("{u}:{p}")]);
        }
        let out = cmd
            .arg(format!("http://127.0.0.1:8000{path}"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Starts a container: a new PID namespace whose PID 1 is `init`, run with only `env`.
    fn boot(&mut self, init: &str, env: &[(&str, &str)]) -> Container {
        self.boots += 1;
        let log = self.dir.path().join(format!("boot-{}.log", self.boots));
        let env: Vec<String> = env
            .iter()
            .map(|(k, v)| shell_quote(&format!("{k}={v}")))
            .collect();
        let script = format!(
            "mount -t proc proc /proc && exec /usr/bin/env -i PATH={PATH} {} {init}",
            env.join(" ")
        );
        let file = File::create(&log).expect("log file");
        let child = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "-n", "--"])
            .args(["unshare", "--pid", "--mount", "--kill-child", "chroot"])
            .arg(self.root())
            .args(["/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the container");
        Container { child, log }
    }

    /// `vastgate status --json` of the running supervisor.
    fn status(&self) -> serde_json::Value {
        let out = self.sh("vastgate status --json");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn state_of(&self, program: &str) -> String {
        self.status()["programs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == program))
            .and_then(|p| p["state"].as_str())
            .unwrap_or("")
            .to_string()
    }

    /// Waits until the gateway serves Forge to `user`.
    fn wait_for_forge(&self, user: (&str, &str)) -> String {
        eventually("Forge behind the gateway", || {
            let (code, body) = self.curl("/", Some(user));
            (code == 200).then_some(body)
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // --kill-child: the holder's child, and with it the mount and network namespace, goes too.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// One container start (a PID namespace).
struct Container {
    child: Child,
    log: PathBuf,
}

impl Container {
    /// PID 1 of the container, as this machine numbers it.
    fn init_pid(&self) -> u32 {
        eventually("the container's PID 1", || {
            children_of(self.child.id()).first().copied()
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `docker stop`: SIGTERM to PID 1; returns how long until the container was gone.
    fn stop(&mut self) -> (Duration, Option<ExitStatus>) {
        let pid = self.init_pid();
        let start = Instant::now();
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (start.elapsed(), Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (start.elapsed(), None)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // --kill-child: PID 1 gets SIGKILL, and the kernel ends the rest of the namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PROVISION_SLOWLY: &str = r#"cat > /root/provision.sh <<'EOF'
#!/bin/bash
echo run >> /root/provision-runs
echo "downloading models"
sleep 4
EOF
chmod 0755 /root/provision.sh"#;

#[test]
fn entrypoint_mode_serves_behind_the_login_provisions_once_and_stops_within_10_s() {
    let Some(mut sb) = Sandbox::open() else {
        return;
    };
    sb.sh_ok(PROVISION_SLOWLY);
    let first = [
        ("USERNAME", "alice"),
        ("PASSWORD", "first \"pass\" $HOME a=b"),
        ("PROVISIONING_SCRIPT", "/root/provision.sh"),
        ("VAST_TCP_PORT_8000", "40123"),
        ("FORGE_ARGS", "--xformers  --cuda-malloc"),
    ];
    let alice = ("alice", first[1].1);
    let mut c = sb.boot("/usr/local/bin/entrypoint.sh", &first);

    // While provisioning runs, the gateway already serves and Forge's route says so.
    let page = eventually("the provisioning page", || {
        let (code, body) = sb.curl("/", Some(alice));
        (code == 503 && body.contains("downloading models")).then_some(body)
    });
    assert!(page.contains("waiting for provisioning"), "{page}");
    assert_eq!(sb.curl("/", None).0, 401);
    assert_eq!(sb.curl("/", Some(("alice", "wrong"))).0, 401);

    let body = sb.wait_for_forge(alice);
    assert!(body.starts_with("forge / user=alice"), "{body}");
    let status = sb.status();
    assert_eq!(status["supervisor"]["pid1"], true, "{status}");
    assert_eq!(status["supervisor"]["pid"], 1, "{status}");
    assert_eq!(sb.read("/root/provision-runs").lines().count(), 1);

    // Each app started as the image starts it, reached through its route.
    let forge_args = sb.read("/var/log/fake-apps/forge.args");
    let uid = sb.sh_ok("id -u appuser");
    assert!(
        forge_args.starts_with(&format!("uid={} ", uid.trim())),
        "Forge runs as appuser: {forge_args}"
    );
    for flag in [
        "--port 7860",
        "--api",
        "--skip-prepare-environment",
        "--data-dir /workspace/forge",
        "--xformers --cuda-malloc",
    ] {
        assert!(forge_args.contains(flag), "{flag} missing: {forge_args}");
    }
    assert!(!forge_args.contains("--listen"), "{forge_args}");
    let fb_args = sb.read("/var/log/fake-apps/filebrowser.args");
    assert!(
        fb_args.contains("config set")
            && fb_args.contains("--auth.method=proxy --auth.header=X-Forwarded-User"),
        "{fb_args}"
    );
    assert!(sb
        .curl("/files/", Some(alice))
        .1
        .starts_with("filebrowser /files/ user=alice"));
    assert!(sb
        .curl("/terminal/", Some(alice))
        .1
        .starts_with("ttyd /terminal/"));
    assert!(sb.curl("/logs/", Some(alice)).1.starts_with("logdy / "));
    let ttyd_args = sb.read("/var/log/fake-apps/ttyd.args");
    assert!(ttyd_args.contains("-i lo -b /terminal -W"), "{ttyd_args}");
    let logdy_args = sb.read("/var/log/fake-apps/logdy.args");
    assert!(
        logdy_args.contains("follow /var/log/vastgate/forge.log") && logdy_args.contains("-n -u"),
        "{logdy_args}"
    );
    assert!(
        sb.read("/var/log/supervisor/forge.log")
            .contains("started forge"),
        "/var/log/supervisor leads to the program logs"
    );

    // /etc/environment: root only, and bash reads back exactly what was set.
    let mode = sb.sh_ok("stat -c %a /etc/environment");
    assert_eq!(mode.trim(), "600");
    let read_back =
        sb.sh_ok(r#". /etc/environment; printf '%s\n' "$PASSWORD" "$VAST_TCP_PORT_8000""#);
    assert_eq!(read_back, format!("{}\n40123\n", first[1].1));
    // pam_env, as an SSH login reads it (su runs the same pam_env readenv=1 session module).
    let pam = sb.sh_ok(r#"su root -c 'printf "%s\n" "$PASSWORD" "$VAST_TCP_PORT_8000"'"#);
    assert_eq!(pam, read_back, "pam_env reads another value than bash");

    let (took, exit) = c.stop();
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?}:\n{}",
        c.log()
    );
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", c.log());
    drop(c);

    // The next start, with another password: the new one works, the old one does not, the
    // provisioning does not run again, and /etc/environment holds each variable once.
    let mut second = first;
    second[1] = ("PASSWORD", "second-pass");
    let c = sb.boot("/usr/local/bin/entrypoint.sh", &second);
    sb.wait_for_forge(("alice", "second-pass"));
    assert_eq!(
        sb.curl("/", Some(alice)).0,
        401,
        "the old password still works"
    );
    assert_eq!(sb.read("/root/provision-runs").lines().count(), 1);
    assert!(sb.read("/var/log/provisioning.log").contains("already ran"));
    let environment = sb.read("/etc/environment");
    for name in [
        "USERNAME",
        "PASSWORD",
        "PROVISIONING_SCRIPT",
        "VAST_TCP_PORT_8000",
        "FORGE_ARGS",
    ] {
        let lines = environment
            .lines()
            .filter(|l| l.starts_with(&format!("{name}=")))
            .count();
        assert_eq!(lines, 1, "{name} in:\n{environment}");
    }
    assert!(
        environment.contains("PASSWORD=\"second-pass\""),
        "{environment}"
    );
    drop(c);
}

#[test]
fn failed_provisioning_runs_again_at_the_next_start_and_forge_starts_anyway() {
    let Some(mut sb) = Sandbox::open() else {
        return;
    };
    let script = |code: u8| {
        format!(
            "printf '#!/bin/bash\\necho run >> /root/provision-runs\\necho trying\\nexit {code}\\n' > /root/provision.sh && chmod 0755 /root/provision.sh"
        )
    };
    let env = [
        ("PASSWORD", "pw-provision"),
        ("PROVISIONING_SCRIPT", "/root/provision.sh"),
    ];
    let admin = ("admin", "pw-provision");
    sb.sh_ok(&script(3));
    for (boot, runs) in [(1, 1), (2, 2)] {
        let c = sb.boot("/usr/local/bin/entrypoint.sh", &env);
        sb.wait_for_forge(admin);
        assert_eq!(sb.state_of("provisioning"), "EXITED", "boot {boot}");
        assert_eq!(sb.read("/root/provision-runs").lines().count(), runs);
        assert!(sb
            .read("/var/log/provisioning.log")
            .contains("failed (exit status 3)"));
        assert_eq!(
            sb.sh("vastgate status").status.code(),
            Some(3),
            "a failed provisioning is not healthy"
        );
        drop(c);
    }
    // Fixed: it runs once more, then never again.
    sb.sh_ok(&script(0));
    for runs in [3, 3] {
        let c = sb.boot("/usr/local/bin/entrypoint.sh", &env);
        sb.wait_for_forge(admin);
        assert_eq!(sb.read("/root/provision-runs").lines().count(), runs);
        eventually("every program healthy", || {
            (sb.sh("vastgate status").status.code() == Some(0)).then_some(())
        });
        drop(c);
    }
}

/// A stand-in for Vast's `/.launch`: it runs `/root/onstart.sh` like Vast does (timing it), then
/// stays up as PID 1 the way sshd would. `before` runs first (Jupyter, in that mode).
fn fake_launch(mode: &str, before: &str) -> String {
    format!(
        r#"cat > /.launch <<'EOF'
#!/bin/bash
# Vast's launcher ({mode} mode), as far as the image can tell.
{before}
date +%s%N > /var/log/launch.t0
bash /root/onstart.sh > /var/log/launch.log 2>&1
date +%s%N > /var/log/launch.t1
exec sleep infinity
EOF
chmod 0755 /.launch"#
    )
}

fn onstart_took(sb: &Sandbox) -> Duration {
    let t = |f: &str| sb.read(f).trim().parse::<u64>().unwrap_or(0);
    let t0 = t("/var/log/launch.t0");
    let t1 = eventually("onstart to return", || {
        let t1 = t("/var/log/launch.t1");
        (t1 > 0).then_some(t1)
    });
    Duration::from_nanos(t1.saturating_sub(t0))
}

/// Runs onstart a second time inside the running container, as a user would from SSH.
fn onstart_again(sb: &Sandbox, c: &Container, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("nsenter");
    cmd.args([
        "-t",
        &c.init_pid().to_string(),
        "-m",
        "-p",
        "-n",
        "-r",
        "-w",
        "--",
    ])
    .args(["/usr/bin/env", "-i", &format!("PATH={PATH}")]);
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    let out = cmd
        .args(["bash", "/root/onstart.sh"])
        .stdin(Stdio::null())
        .output()
        .expect("nsenter");
    let _ = sb;
    assert!(out.status.success(), "second onstart: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pids_of_programs(sb: &Sandbox) -> Vec<(String, u64)> {
    sb.status()["programs"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("").to_string(),
                        p["pid"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn ssh_mode_onstart_starts_everything_once_and_logs_to_onstart_log() {
    let Some(mut sb) = Sandbox::open() else {
        return;
    };
    sb.sh_ok(&fake_launch("ssh", ""));
    let env = [("USERNAME", "bob"), ("PASSWORD", "ssh-mode pw")];
    let c = sb.boot("/.launch", &env);
    sb.wait_for_forge(("bob", "ssh-mode pw"));
    assert!(
        onstart_took(&sb) < Duration::from_secs(5),
        "onstart must return at once"
    );
    assert_eq!(sb.curl("/", None).0, 401);
    let status = sb.status();
    assert_eq!(status["supervisor"]["pid1"], false, "{status}");
    assert_eq!(status["supervisor"]["subreaper"], true, "{status}");
    let log = sb.read("/var/log/onstart.log");
    assert!(log.contains("SSH launch mode"), "{log}");
    assert!(log.contains("supervisor started"), "{log}");
    eventually("every program RUNNING", || {
        (sb.sh("vastgate status").status.code() == Some(0)).then_some(())
    });

    // The seed's supervisorctl habits still work.
    let shim = sb.sh_ok("supervisorctl status");
    assert!(
        shim.lines()
            .any(|l| l.starts_with("forge") && l.contains("RUNNING")),
        "{shim}"
    );
    assert!(sb
        .sh_ok("supervisorctl tail -5 provisioning")
        .contains("PROVISIONING_SCRIPT is not set"));

    // Again, as Vast does at the next start or a user from a shell: nothing changes.
    let environment = sb.read("/etc/environment");
    let pids = pids_of_programs(&sb);
    let said = onstart_again(&sb, &c, &env);
    assert!(said.contains("already running"), "{said}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pids_of_programs(&sb), pids);
    assert_eq!(sb.read("/etc/environment"), environment);
    let supervisors = sb.sh_ok(&format!(
        "nsenter -t {} -p -m -r -- pgrep -a -x vastgate",
        c.init_pid()
    ));
    assert_eq!(supervisors.lines().count(), 1, "{supervisors}");
    drop(c);
}

#[test]
fn jupyter_mode_leaves_port_8080_to_vasts_jupyter() {
    let Some(mut sb) = Sandbox::open() else {
        return;
    };
    let jupyter = "python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp >/var/log/jupyter.log 2>&1 &\n\
                   for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done";
    sb.sh_ok(&fake_launch("jupyter", jupyter));
    let c = sb.boot("/.launch", &[("PASSWORD", "jupyter-mode-pw")]);
    sb.wait_for_forge(("admin", "jupyter-mode-pw"));
    let log = sb.read("/var/log/onstart.log");
    assert!(log.contains("Jupyter launch mode"), "{log}");
    eventually("every program RUNNING", || {
        (sb.sh("vastgate status").status.code() == Some(0)).then_some(())
    });
    // Vast's Jupyter still owns 8080, alone.
    let listeners = sb.sh_ok("ss -Hltnp 'sport = :8080'");
    assert_eq!(listeners.lines().count(), 1, "{listeners}");
    assert!(listeners.contains("python3"), "{listeners}");
    let jupyter_answers = sb.sh_ok("python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').status)\"");
    assert_eq!(jupyter_answers.trim(), "200");
    drop(c);
}
