//! The process managers' scripts (systemd.py, supervisord.py) run against
//! this machine with stand-ins for what they drive, without the test bed:
//! compiled only for tests (`#[cfg(test)] mod manager_tests;` in mod.rs).

use super::*;
use std::process::Command;

/// A temporary directory with an empty `bin/` for stand-in commands, and a
/// local port that answers 200 to every request.
fn stand_in_bin_and_port() -> (tempfile::TempDir, std::path::PathBuf, u16) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            );
        }
    });
    (dir, bin, port)
}

/// systemd.py against stand-ins for `systemctl` and `journalctl` (this
/// machine's PID 1 is no systemd; the bed's systemd hosts run the real
/// ones, tests/systemd_deploy.rs): `check` reads each instance's state and
/// probes its port; a `start` that fails carries the journal's lines and
/// systemd's result; one that failed at systemd's CGROUP step (219) is tried
/// again; a manager that does not answer says how to enable lingering.
#[test]
fn systemd_py_reads_units_probes_ports_and_explains_failures() {
    let (dir, bin, port) = stand_in_bin_and_port();
    // @0 runs, @1 has failed; `start` of @1 fails; MODE=nobus: no manager;
    // MODE=cgroup: @1's first failure is systemd's CGROUP step (219). Every
    // call is logged to $LOG.
    let systemctl = r#"#!/bin/sh
[ "$MODE" = nobus ] && { echo "Failed to connect to bus: No medium found"; exit 1; }
shift  # --user
echo "$*" >> "$LOG"
case "$1" in
list-units) echo "app-a@0.service loaded active running x"; echo "app-a@1.service loaded failed failed x" ;;
show) case "$2" in
    *@0.service) printf 'ActiveState=active
SubState=running
MainPID=42
NRestarts=0
Result=success
ExecMainStatus=0
LoadState=loaded
' ;;
    *) status=3
       [ "$MODE" = cgroup ] && [ ! -e "$LOG.reset" ] && status=219
       printf 'ActiveState=failed
SubState=failed
MainPID=0
NRestarts=3
Result=exit-code
ExecMainStatus=%s
LoadState=loaded
' "$status" ;;
    esac ;;
enable) ;;
reset-failed) touch "$LOG.reset" ;;
start) echo "Job for $2 failed because the control process exited with error code."; exit 1 ;;
*) exit 0 ;;
esac
"#;
    let journalctl = "#!/bin/sh
echo 'Traceback: broken on purpose'
echo 'app-a@1.service: Failed to kill control group x, ignoring: Input/output error'
";
    for (name, text) in [("systemctl", systemctl), ("journalctl", journalctl)] {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let spec = serde_json::json!({
        "root": dir.path(), "unit": "app-a", "count": 2,
        "ports": [port.to_string(), "1"],
        "health": {"path": "/", "status": [200, 399], "timeout": 5, "headers": {}},
        "wait": 5,
    })
    .to_string();
    let log = dir.path().join(format!("calls-{}", std::process::id()));
    let run = |action: &str, mode: &str| {
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = Command::new("python3")
            .arg("-c")
            .arg(SYSTEMD.source)
            .args([action, &spec])
            .env("PATH", path)
            .env("MODE", mode)
            .env("LOG", &log)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = run("check", "");
    assert_eq!(code, Some(0), "{stderr}");
    let check: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let processes = check["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "{check}");
    assert_eq!(processes[0]["name"], "app-a@0.service");
    assert_eq!(processes[0]["state"], "RUNNING");
    assert_eq!(processes[0]["status"], 200);
    assert_eq!(processes[0]["healthy"], true);
    assert_eq!(processes[1]["state"], "FATAL");
    assert_eq!(processes[1]["healthy"], false);

    let (code, _, stderr) = run("start", "");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("journal: Traceback: broken on purpose"),
        "{stderr}"
    );
    assert!(!stderr.contains("ignoring"), "{stderr}");
    assert!(
        stderr.contains(
            "app-a@1.service did not start: systemctl --user start app-a@1.service: Job for"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("result exit-code, exit status 3"),
        "{stderr}"
    );

    // A start that failed at systemd's CGROUP step is tried again, after
    // reset-failed; this one then fails for the app's own reason.
    let _ = std::fs::remove_file(&log);
    let (code, _, stderr) = run("start", "cgroup");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("result exit-code, exit status 3"),
        "{stderr}"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let of_one = |verb: &str| {
        calls
            .lines()
            .filter(|l| *l == format!("{verb} app-a@1.service"))
            .count()
    };
    assert_eq!((of_one("start"), of_one("reset-failed")), (2, 1), "{calls}");

    let (code, _, stderr) = run("check", "nobus");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("systemd's user manager of"), "{stderr}");
}

/// systemd.py with scope "system" against stand-ins for `sudo`,
/// `systemctl` and `journalctl`: every systemctl and journalctl goes through
/// `sudo -n` without `--user`, the unit is installed by root with `install`
/// into /etc/systemd/system, and a host where sudo asks for a password fails
/// with one line naming the user and the sudoers line to add.
#[test]
fn systemd_py_drives_system_units_through_sudo() {
    let (dir, bin, port) = stand_in_bin_and_port();
    // Every call is logged to $LOG; MODE=password: sudo wants one. sudo runs
    // systemctl and journalctl, and only logs `install` (no root here).
    let sudo = r#"#!/bin/sh
echo "sudo $*" >> "$LOG"
[ "$MODE" = password ] && { echo "sudo: a password is required" >&2; exit 1; }
[ "$1" = -n ] || { echo "sudo without -n" >&2; exit 1; }
shift
[ "$1" = install ] && exit 0
exec "$@"
"#;
    // @0 runs and answers; @1 has failed and does not start.
    let systemctl = r#"#!/bin/sh
echo "systemctl $*" >> "$LOG"
case "$1" in
list-units) echo "app-a@0.service loaded active running x" ;;
show) case "$2" in
    *@0.service) printf 'ActiveState=active\nSubState=running\nMainPID=42\nNRestarts=0\nResult=success\nExecMainStatus=0\nLoadState=loaded\n' ;;
    *) printf 'ActiveState=failed\nSubState=failed\nMainPID=0\nNRestarts=0\nResult=exit-code\nExecMainStatus=3\nLoadState=loaded\n' ;;
    esac ;;
start) echo "Job for $2 failed."; exit 1 ;;
*) exit 0 ;;
esac
"#;
    let journalctl =
        "#!/bin/sh\necho \"journalctl $*\" >> \"$LOG\"\necho 'Traceback: broken on purpose'\n";
    for (name, text) in [
        ("sudo", sudo),
        ("systemctl", systemctl),
        ("journalctl", journalctl),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let root = dir.path().join("venv");
    std::fs::create_dir_all(root.join("releases/1.0.0-abc")).unwrap();
    std::fs::create_dir_all(root.join(".es")).unwrap();
    std::fs::write(
        root.join("releases/1.0.0-abc/systemd.service"),
        "[Service]\nUser=deploy\n",
    )
    .unwrap();
    let spec = |count: u32| {
        serde_json::json!({
            "root": root, "release": "1.0.0-abc", "unit": "app-a", "scope": "system",
            "count": count, "ports": [port.to_string(), "1"], "name": "1", "do": "start",
            "health": {"path": "/", "status": [200, 399], "timeout": 5, "headers": {}, "settle": 0},
            "wait": 5,
        })
        .to_string()
    };
    let log = dir.path().join("calls");
    let run = |action: &str, spec: &str, mode: &str| {
        let _ = std::fs::remove_file(&log);
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = Command::new("python3")
            .arg("-c")
            .arg(SYSTEMD.source)
            .args([action, spec])
            .env("PATH", path)
            .env_remove("XDG_RUNTIME_DIR")
            .env("MODE", mode)
            .env("LOG", &log)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            calls,
        )
    };

    // A switch: the unit installed by root, systemd driven through sudo.
    let (code, stderr, calls) = run("switch", &spec(1), "");
    assert_eq!(code, Some(0), "{stderr}\n{calls}");
    let copy = root.join("etc/systemd.service");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "[Service]\nUser=deploy\n"
    );
    let lines: Vec<&str> = calls.lines().collect();
    let sudo: Vec<&str> = calls.lines().filter(|l| l.starts_with("sudo ")).collect();
    assert_eq!(sudo[0], "sudo -n systemctl --version", "{calls}");
    assert_eq!(
        sudo[1],
        format!(
            "sudo -n install -m 0644 {} /etc/systemd/system/app-a@.service",
            std::fs::canonicalize(&copy).unwrap().display()
        ),
        "{calls}"
    );
    for expected in [
        "sudo -n systemctl daemon-reload",
        "sudo -n systemctl enable --quiet app-a@0.service",
        "sudo -n systemctl restart app-a@0.service",
    ] {
        assert!(lines.contains(&expected), "no {expected:?} in\n{calls}");
    }
    assert!(!calls.contains("--user"), "{calls}");
    // Every systemctl went through sudo (its log line follows sudo's).
    for (n, line) in lines.iter().enumerate() {
        if line.starts_with("systemctl ") {
            assert_eq!(lines[n - 1], format!("sudo -n {line}"), "{calls}");
        }
    }

    // A start that fails shows the system journal's lines, read through sudo.
    let (code, stderr, calls) = run("program", &spec(2), "");
    assert_eq!(code, Some(1), "{calls}");
    assert!(
        stderr.contains("journal: Traceback: broken on purpose"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did not start: sudo -n systemctl start app-a@1.service: Job for"),
        "{stderr}"
    );
    assert!(
        calls.contains("sudo -n journalctl -u app-a@1.service --since @"),
        "{calls}"
    );
    assert!(!calls.contains("--user"), "{calls}");

    // sudo wants a password: one line, the user and what to add to sudoers.
    let (code, stderr, _) = run("check", &spec(2), "password");
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let me = me.trim();
    assert!(
        lines[0].starts_with(&format!("sudo -n asks {me} for a password")),
        "{stderr}"
    );
    assert!(
        lines[0].contains(&format!("`{me} ALL=(root) NOPASSWD: /usr/bin/systemctl")),
        "{stderr}"
    );
}

/// supervisord.py's fault_line, run by python3 with a stand-in for the
/// `supervisor` package (its Faults codes as supervisor 4 defines them).
/// supervisord.py's functions (without the call of main) followed by
/// `code`, run by python3 beside a stand-in `supervisor` package whose
/// Faults are `faults` (Python class body); its stdout.
fn supervisord_functions(code: &str, faults: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("supervisor");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(pkg.join("options.py"), "class ClientOptions:\n    pass\n").unwrap();
    std::fs::write(pkg.join("xmlrpc.py"), format!("class Faults:\n{faults}")).unwrap();
    let mut script = SUPERVISORD
        .source
        .strip_suffix("main(sys.argv[1:])\n")
        .expect("supervisord.py ends by calling main")
        .to_string();
    script.push_str("\nimport xmlrpc.client\n");
    script.push_str(code);
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("PYTHONPATH", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn supervisord_refusals_are_one_line_each() {
    let cases = [
            (6, "SHUTDOWN_STATE", None, "supervisord is shutting down and takes no commands: run `es supervisor start VENV` once it has stopped (supervisord: SHUTDOWN_STATE)"),
            (10, "BAD_NAME: web:nope", None, "supervisord has no process or group web:nope (supervisord: BAD_NAME)"),
            (20, "NO_FILE: can't find command '/nonexistent'", Some("web:web_0"), "web:web_0 cannot start: can't find command '/nonexistent' (supervisord: NO_FILE)"),
            (21, "NOT_EXECUTABLE: command at '/etc/passwd' is not executable", Some("web:web_1"), "web:web_1 cannot start: command at '/etc/passwd' is not executable (supervisord: NOT_EXECUTABLE)"),
            (50, "SPAWN_ERROR: web:web_0", Some("web:web_0"), "web:web_0 could not be spawned (its log and supervisord's say why) (supervisord: SPAWN_ERROR)"),
            (40, "ABNORMAL_TERMINATION: web:web_0", Some("web:web_0"), "web:web_0 exited as soon as it was started (supervisord: ABNORMAL_TERMINATION)"),
            (70, "NOT_RUNNING: web:web_0", Some("web:web_0"), "web:web_0 is not running (supervisord: NOT_RUNNING)"),
            (99, "SOMETHING_NEW: odd", None, "supervisord refused: SOMETHING_NEW: odd (supervisord: fault 99)"),
        ];
    let mut code = String::new();
    for (code_number, text, name, _) in &cases {
        let name = name.map_or("None".to_string(), |n| format!("{n:?}"));
        code.push_str(&format!(
            "print(fault_line(xmlrpc.client.Fault({code_number}, {text:?}), {name}))\n"
        ));
    }
    let faults = "    UNKNOWN_METHOD = 1\n    SHUTDOWN_STATE = 6\n    BAD_NAME = 10\n    NO_FILE = 20\n    NOT_EXECUTABLE = 21\n    FAILED = 30\n    ABNORMAL_TERMINATION = 40\n    SPAWN_ERROR = 50\n    ALREADY_STARTED = 60\n    NOT_RUNNING = 70\n";
    let stdout = supervisord_functions(&code, faults);
    let lines: Vec<&str> = stdout.lines().collect();
    let expected: Vec<&str> = cases.iter().map(|c| c.3).collect();
    assert_eq!(lines, expected);
}

#[test]
fn supervisord_restart_outlasts_an_autorestart_between_stop_and_start() {
    // Against a scripted proxy: the process had just exited (NOT_RUNNING),
    // supervisord's autorestart starts it before es does (ALREADY_STARTED) once.
    let code = r#"
class Supervisor:
    def __init__(self, refusals):
        self.calls, self.refusals = [], list(refusals)
    def stopProcess(self, name, wait):
        self.calls.append("stop")
        if len(self.calls) == 1:
            raise xmlrpc.client.Fault(70, "NOT_RUNNING: " + name)
    def startProcess(self, name, wait):
        self.calls.append("start")
        if self.refusals:
            raise xmlrpc.client.Fault(60, self.refusals.pop(0) + ": " + name)
class Proxy:
    def __init__(self, refusals):
        self.supervisor = Supervisor(refusals)
once = Proxy(["ALREADY_STARTED"])
restart(once, "web:web_1")
print(" ".join(once.supervisor.calls))
always = Proxy(["ALREADY_STARTED"] * 9)
try:
    restart(always, "web:web_1")
except xmlrpc.client.Fault as fault:
    print(len(always.supervisor.calls), fault.faultString)
"#;
    assert_eq!(
        supervisord_functions(code, "    pass\n"),
        "stop start stop start\n10 ALREADY_STARTED: web:web_1\n"
    );
}

#[test]
fn supervisord_verdict_overlaps_startsecs_and_the_settle_window_and_catches_a_late_crash() {
    // A scripted fleet on a fake clock: each process's state as a function of
    // the seconds since the verdict began.
    let code = r#"
class Clock:
    def __init__(self):
        self.now = 1000.0
    def time(self):
        return self.now
    def sleep(self, seconds):
        self.now += seconds
time = Clock()
START = time.now
def probe(port, health):
    return 200, None
def process_port(info, spec):
    return 8800
def unhealthy(spec, info, reason, whole=False):
    return Failure("%s %s" % (info["name"], reason))
class Fleet:
    def __init__(self, states):
        self.states = states
    def getAllProcessInfo(self):
        t = time.now - START
        return [{"group": "web", "name": name, "pid": 7, "statename": state(t), "description": ""}
                for name, state in self.states]
class Proxy:
    def __init__(self, states):
        self.supervisor = Fleet(states)
def verdict(settle, timeout, states):
    global START
    START = time.now
    spec = {"health": {"settle": settle, "timeout": timeout, "status": [200, 399]}}
    names = ["web:" + name for name, _ in states]
    try:
        stays_healthy(Proxy(states), spec, names)
        print("healthy after %.2fs" % (time.now - START))
    except Failure as failure:
        print("refused after %.2fs: %s" % (time.now - START, failure))
# RUNNING 2.7 s in (startsecs), settle 4: the waits overlap, 4 s in all.
verdict(4, 30, [("web_0", lambda t: "STARTING" if t < 2.7 else "RUNNING"),
                ("web_1", lambda t: "RUNNING")])
# startsecs longer than the settle window: RUNNING decides.
verdict(1, 30, [("web_0", lambda t: "STARTING" if t < 2.7 else "RUNNING")])
# A crash 3.3 s after answering, with the default settle window.
verdict(4, 30, [("web_0", lambda t: "RUNNING" if t < 3.3 else "EXITED")])
# Never RUNNING.
verdict(1, 2, [("web_0", lambda t: "STARTING")])
"#;
    assert_eq!(
        supervisord_functions(code, "    pass\n"),
        "healthy after 4.00s\n\
         healthy after 2.75s\n\
         refused after 3.50s: web_0 EXITED within the settle window (4s after answering): \n\
         refused after 2.25s: web_0 still STARTING after 2s\n"
    );
}
