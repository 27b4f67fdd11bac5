//! Connection slots (issue 19, item 1): 256 idle connections used to lock everyone out, the
//! admin included, for as long as they stayed open. Now idle connections are closed, each
//! uid and each process holds a share only, and slots are kept for the admin role.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdout, Command};

use latchkey_test_support::{have_root, Daemon, Setup};

/// Opens connections one by one, sends a `health` on each and reports whether the daemon
/// served it ("open") or refused it ("closed": answered with the throttled server error, then
/// closed, or closed without a word); then holds the open ones until killed.
const HOLDER: &str = r#"
import json, os, socket, struct, sys, time
path, count, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if uid >= 0:
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
request = json.dumps({"Request": {"context": {"deadline": {"secs": 10}}, "id": 1,
                                  "message": {"Health": {}}}}).encode()
def reply(s):
    head = s.recv(4, socket.MSG_WAITALL)
    if len(head) < 4:
        return None
    body = s.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL)
    return json.loads(body)["message"]
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(10)
    s.sendall(struct.pack(">I", len(request)) + request)
    message = reply(s)
    if message is None or message.get("Err", {}).get("kind") == 10:
        print("closed", flush=True)
    else:
        print("open", flush=True)
        held.append(s)
time.sleep(3600)
"#;

/// A process holding connections, killed when dropped.
struct Holder {
    /// The python process.
    _child: Child,
    /// What it reports, one line per connection.
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    /// Starts a process (as `uid`, when given; needs root) that opens `count` connections.
    fn start(daemon: &Daemon, count: usize, uid: Option<u32>) -> Holder {
        let uid = uid.map_or(-1, i64::from);
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HOLDER)
            .arg(daemon.socket())
            .arg(count.to_string())
            .arg(uid.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        Holder {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// What happened to each of the `count` connections, in order.
    async fn outcomes(&mut self, count: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..count {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("the holder reports within 10 s")
                .expect("read the holder's report")
                .expect("the holder reports every connection");
            seen.push(line);
        }
        seen
    }
}

fn open_closed(open: usize, closed: usize) -> Vec<String> {
    let mut v = vec!["open".to_owned(); open];
    v.extend(vec!["closed".to_owned(); closed]);
    v
}

#[tokio::test]
async fn no_process_and_no_uid_takes_every_connection() {
    let daemon = Setup::new()
        .toml(
            "[server]\nmax_connections = 20\nadmin_connections = 2\n\
             max_connections_per_uid = 4\nmax_connections_per_pid = 2",
        )
        .start()
        .await;
    // One process gets its two, not a third.
    let mut first = Holder::start(&daemon, 3, None);
    assert_eq!(first.outcomes(3).await, open_closed(2, 1));
    // Another process of the same uid gets two more: then the uid holds its four.
    let mut second = Holder::start(&daemon, 3, None);
    assert_eq!(second.outcomes(3).await, open_closed(2, 1));
    let refused = latchkey_client::Client::connect(daemon.socket())
        .await
        .expect("the socket accepts");
    // Refused, and told so: the connection limits, not a bare reset (issue 17).
    let refusal = refused.health().await;
    assert!(
        matches!(refusal, Err(latchkey_client::Error::Throttled)),
        "a fifth connection of one uid is refused as throttled: {refusal:?}"
    );
    daemon
        .wait_for_log("refused a connection over the connection limits")
        .await;
    // The slots come back when their holder goes.
    drop(first);
    let client = eventually_served(&daemon).await;
    let metrics = client.metrics().await.expect("metrics");
    for reason in ["per_pid", "per_uid"] {
        let line = format!("latchkey_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}

/// A client, once a connection is served again (a killed holder's slots are given back as
/// soon as the daemon sees its connections close).
async fn eventually_served(daemon: &Daemon) -> latchkey_client::Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let client = daemon.client().await;
        if client.health().await.is_ok() {
            return client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot came back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn apps_holding_every_slot_leave_the_admin_its_own() {
    if !have_root("connects as another uid") {
        return;
    }
    let app = 64_251;
    let setup = Setup::new().toml(&format!(
        "[server]\nsocket_mode = \"0666\"\nmax_connections = 8\nadmin_connections = 2\n\
         [auth]\napp_uids = [{app}]"
    ));
    // Let the app uid reach the socket inside the test's private directory.
    std::fs::set_permissions(
        setup.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let daemon = setup.start().await;
    let mut apps = Holder::start(&daemon, 7, Some(app));
    assert_eq!(
        apps.outcomes(7).await,
        open_closed(6, 1),
        "the app gets every slot but the two kept"
    );
    // The operator (root: admin) still gets in, twice.
    let first = daemon.client().await;
    let second = daemon.client().await;
    for client in [&first, &second] {
        let health = client.health().await.expect("an admin slot");
        assert_eq!(health.caller_role, latchkey_client::CallerRole::Admin);
    }
    let metrics = first.metrics().await.expect("metrics");
    assert!(
        metrics.contains("latchkey_connections_refused_total{reason=\"kept_for_admin\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_the_rust_client_connects_again_unnoticed() {
    let daemon = Setup::new()
        .toml("[server]\nidle_timeout_secs = 1")
        .start()
        .await;
    let mut raw = UnixStream::connect(daemon.socket()).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut byte))
        .await
        .expect("the daemon closes an idle connection");
    assert_eq!(read.expect("a clean end"), 0, "end of file");
    // A client whose connection was closed while it sat idle does not see it: its next call
    // goes on a new connection.
    let client = daemon.client().await;
    client.health().await.expect("first call");
    tokio::time::sleep(Duration::from_secs(3)).await;
    client
        .health()
        .await
        .expect("a call after the idle connection was closed");
}
