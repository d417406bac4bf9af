//! Real servers and real daemons for the distributed tests: redis-server and
//! s3s-fs on free loopback ports, and the subliminal binaries as processes.
//! Each stops (kill) when dropped; nothing listens beyond 127.0.0.1.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    // Tests of one binary run in parallel, and the OS may offer a port again
    // as soon as its probe closes: two servers would then race for it. No
    // port is handed out twice in one process.
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !handed.contains(&port) {
            handed.push(port);
            return port;
        }
    }
}

/// Polls `ready` until it holds or `timeout` passes; panics with `what` then.
pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a server listens on `port`. A connection whose own port is
/// `port` is TCP connecting to itself (simultaneous open, possible because
/// test ports come from the ephemeral range): no server is there.
fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|s| s.local_addr().is_ok_and(|a| a.port() != port))
}

/// Whether a server on `port` answers `request` with a reply that `ok`
/// accepts (read within 2 s). A self-connection is no server.
fn answers(port: u16, request: &[u8], ok: impl Fn(&[u8]) -> bool) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if stream.local_addr().is_ok_and(|a| a.port() == port) {
        return false;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 64];
    stream.write_all(request).is_ok() && stream.read(&mut reply).is_ok_and(|n| ok(&reply[..n]))
}

/// Whether a Redis server answers on `port`: PING gets +PONG, or an error
/// reply such as NOAUTH from a server that wants a password.
fn answers_ping(port: u16) -> bool {
    answers(port, b"PING\r\n", |reply| {
        reply.starts_with(b"+PONG") || reply.starts_with(b"-")
    })
}

/// Whether an HTTP server answers on `port`: any status line will do (an S3
/// server refuses an unsigned request with 403, which is an answer).
fn answers_http(port: u16) -> bool {
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    answers(port, request.as_bytes(), |reply| {
        reply.starts_with(b"HTTP/1.")
    })
}

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// On a port chosen before (a client may already be trying it).
    pub fn start_on(dir: &Path, port: u16) -> Self {
        let mut redis = Redis {
            port,
            child: None,
            dir: dir.to_path_buf(),
            extra: Vec::new(),
        };
        redis.launch();
        redis
    }

    /// With extra redis-server options (a password, ...).
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let mut redis = Redis {
            port: free_port(),
            child: None,
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.launch();
        redis
    }

    /// Serving TLS only, on `port`, with a server certificate signed by a
    /// test CA that openssl makes at `dir/ca.crt` (trust it with SSL_CERT_FILE).
    pub fn start_tls(dir: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("extensions file");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=subliminal-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "redis.crt",
        ]);
        let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
        let port = free_port();
        let tls = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-ca-cert-file".to_owned(),
            dir.join("ca.crt").display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let mut redis = Redis {
            port,
            child: None,
            dir: dir.to_path_buf(),
            extra: tls.to_vec(),
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        if self.extra.iter().any(|a| a == "--tls-port") {
            wait_for(
                "redis-server to accept TLS connections",
                Duration::from_secs(10),
                || accepts(port),
            );
        } else {
            wait_for(
                "redis-server to answer PING",
                Duration::from_secs(10),
                || answers_ping(port),
            );
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server: every key is gone (no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart_empty(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const S3_KEY: &str = "subliminal-test-key";
pub const S3_SECRET: &str = "subliminal-test-secret";

pub struct S3 {
    pub port: u16,
    root: PathBuf,
    child: Option<Child>,
}

fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return PathBuf::from(p);
    }
    let cached = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/subliminal/tools/bin/s3s-fs"))
        .filter(|p| p.exists());
    cached.unwrap_or_else(|| PathBuf::from("s3s-fs"))
}

impl S3 {
    /// An S3 server over `root`, with one bucket named `bucket`.
    pub fn start(root: &Path, bucket: &str) -> Self {
        std::fs::create_dir_all(root.join(bucket)).expect("bucket folder");
        let mut s3 = S3 {
            port: free_port(),
            root: root.to_path_buf(),
            child: None,
        };
        s3.launch();
        s3
    }

    fn launch(&mut self) {
        let port = self.port;
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs runs (scripts/test.sh installs it with cargo install s3s-fs@0.14.1)");
        self.child = Some(child);
        wait_for("s3s-fs to answer HTTP", Duration::from_secs(10), || {
            answers_http(port)
        });
    }

    /// Kills the server and starts it again on the same port over the same
    /// files: requests in flight fail, and the objects stay.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Environment for a process that talks to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A subliminal binary running in the background, its stderr in a log file.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(binary: &str, args: &[&str], env: &[(&str, String)], log: PathBuf) -> Self {
        let file = File::create(&log).expect("log file");
        let child = Command::new(crate::bin(binary))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SUBLIMINAL_DATA", crate::data_dir())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("daemon starts");
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET `http://addr/path` over a plain TCP connection; returns the body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("metrics endpoint reachable");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The address a daemon logged as "metrics at http://ADDR/metrics".
pub fn metrics_addr(log: &str) -> Option<String> {
    let at = log.find("metrics at http://")? + "metrics at http://".len();
    Some(log[at..].split('/').next()?.to_owned())
}

/// The value of one sample line (`name{labels} value`) of an exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An HTTP request and its reply's status and body, through the same
/// client the binaries use (it reads chunked replies, which Prometheus and
/// uvicorn send).
pub fn http(method: &str, url: &str, json: Option<&serde_json::Value>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for one request");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = client.request(method, url);
        if let Some(body) = json {
            request = request.json(body);
        }
        match request.send().await {
            Ok(reply) => {
                let status = reply.status().as_u16();
                (status, reply.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    })
}

/// A server process started from a command line, killed when dropped.
pub struct Process {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, port: u16, log: PathBuf, what: &str) -> Self {
        use std::os::unix::process::CommandExt;
        let file = File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        // A group of its own: servers such as MLflow's start workers of their
        // own, and all of them must stop with the test.
        let child = command
            .process_group(0)
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        Process { port, child, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The whole group: the server and every process it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Prometheus server (Debian package prometheus) with `config`, its data
/// in `dir`; ready when /-/ready says so.
pub fn prometheus(dir: &Path, config: &str) -> Process {
    std::fs::create_dir_all(dir).expect("Prometheus's folder");
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("prometheus.yml written");
    let port = free_port();
    let mut command = Command::new("prometheus");
    command
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let server = Process::spawn(
        &mut command,
        port,
        dir.join("prometheus.log"),
        "prometheus (Debian package prometheus; scripts/setup-services.sh installs it)",
    );
    let ready = format!("{}/-/ready", server.url());
    wait_for("Prometheus to be ready", Duration::from_secs(60), || {
        http("GET", &ready, None).0 == 200
    });
    server
}

/// MLflow's tracking server (PyPI mlflow, in the test virtualenv) on a
/// SQLite file in `dir`; ready when its REST API lists experiments.
pub fn mlflow(dir: &Path) -> Process {
    std::fs::create_dir_all(dir).expect("MLflow's folder");
    let port = free_port();
    let mut command = Command::new("mlflow");
    command
        .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--workers", "1"])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--default-artifact-root")
        .arg(dir.join("artifacts"));
    let server = Process::spawn(
        &mut command,
        port,
        dir.join("mlflow.log"),
        "mlflow (scripts/setup-reference.sh installs it into the test virtualenv)",
    );
    let search = format!("{}/api/2.0/mlflow/experiments/search", server.url());
    let body = serde_json::json!({"max_results": 1});
    wait_for(
        "MLflow's REST API to answer",
        Duration::from_secs(180),
        || http("POST", &search, Some(&body)).0 == 200,
    );
    server
}

/// A static HTTP server (Python's http.server) over `root`; ready when it
/// serves a GET.
pub fn static_files(root: &Path, log: PathBuf) -> Process {
    let port = free_port();
    let mut command = Command::new("python3");
    command
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(root);
    let server = Process::spawn(&mut command, port, log, "python3 -m http.server");
    wait_for(
        "the file server to answer HTTP",
        Duration::from_secs(20),
        || answers_http(port),
    );
    server
}

/// Headless Chromium (Debian package chromium) with `args` and `url`; its
/// standard output. A fresh profile each time, and no background traffic:
/// nothing leaves loopback.
pub fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (Debian package chromium; scripts/setup-services.sh installs it)");
    assert!(
        output.status.success(),
        "chromium {args:?} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The runs of MLflow experiment `name` on the server at `url` (none if the
/// experiment does not exist).
pub fn mlflow_runs(url: &str, name: &str) -> Vec<serde_json::Value> {
    let (status, body) = http(
        "GET",
        &format!("{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"),
        None,
    );
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).expect("MLflow's JSON");
    let id = found["experiment"]["experiment_id"].clone();
    let (status, body) = http(
        "POST",
        &format!("{url}/api/2.0/mlflow/runs/search"),
        Some(&serde_json::json!({"experiment_ids": [id], "max_results": 1000})),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).expect("MLflow's JSON")["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
