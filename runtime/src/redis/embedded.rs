//! A `redis-server` child process on a free loopback port, in a directory of its own: what the
//! demo runs on when no `REDIS_URL` is given, and what tests kill and restart.
//!
//! - [`EmbeddedRedis::start_secured`] adds a password (`requirepass`) and a TLS port with
//!   given certificate files; the plaintext port stays open on loopback, for the readiness
//!   check (which authenticates) and for tests that need a plaintext port to point TLS at.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Turn on the append-only file with `appendfsync always`, so every acknowledged write
    /// survives a SIGKILL. Default on.
    pub append_only: bool,
    /// Extra `redis-server` arguments, such as `["--maxmemory-policy", "allkeys-lru"]`.
    pub extra_args: Vec<String>,
    /// Start as a Redis Cluster node (`--cluster-enabled yes`), its cluster bus on a second
    /// free port; see [`super::EmbeddedCluster`] for a whole cluster. Default off.
    pub cluster_node: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            append_only: true,
            extra_args: Vec::new(),
            cluster_node: false,
        }
    }
}

/// A password and TLS for an embedded server.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedSecurity {
    /// Require this password of every client (`requirepass`). Default none.
    pub password: Option<String>,
    /// Listen for TLS on a second port as well. Default none.
    pub tls: Option<EmbeddedTls>,
}

/// The TLS port's certificate files (PEM).
#[derive(Debug, Clone)]
pub struct EmbeddedTls {
    /// The server's certificate.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA that client certificates must be signed by.
    pub ca_file: PathBuf,
    /// Whether clients must present a certificate (`tls-auth-clients yes`).
    pub auth_clients: bool,
}

/// The server could not be started.
#[derive(Debug)]
pub struct EmbeddedError(pub(super) String);

impl std::fmt::Display for EmbeddedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EmbeddedError {}

/// A running `redis-server`; killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct EmbeddedRedis {
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
    bus_port: Option<u16>,
    dir: PathBuf,
    binary: PathBuf,
    options: EmbeddedOptions,
    security: EmbeddedSecurity,
}

/// The `redis-server` binary: `KEYWAY_REDIS_SERVER`, or `redis-server` on `PATH`.
pub(super) fn find_binary() -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = std::env::var_os("KEYWAY_REDIS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            EmbeddedError(
                "redis-server was not found on PATH. Install it (Debian/Ubuntu: `apt-get install redis-server`; \
                 macOS: `brew install redis`), point KEYWAY_REDIS_SERVER at the binary, or set REDIS_URL to use a \
                 running server"
                    .into(),
            )
        })
}

/// A loopback port nothing listens on, picked below the kernel's ephemeral range so that no
/// outgoing connection (tests open thousands) can be holding it when the server binds it.
fn free_port() -> Result<u16, EmbeddedError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        let (low, span) = (10_000u32, u32::from(ephemeral_low) - 10_000);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut seed = nanos ^ std::process::id().rotate_left(16);
        for _ in 0..64 {
            // A cheap mix (xorshift) of time, process and call count: spread, not secret.
            seed ^= COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9);
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let port = (low + seed % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| EmbeddedError(format!("no free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| EmbeddedError(format!("no free loopback port: {e}")))
}

/// Whether the log says, past `start`, that the server accepts connections.
fn logged_ready(log: &Path, start: u64) -> bool {
    std::fs::read(log).is_ok_and(|text| {
        let new = text.get(start as usize..).unwrap_or_default();
        new.windows(READY.len()).any(|w| w == READY)
    })
}

const READY: &[u8] = b"Ready to accept connections";

/// The last lines of a server's log, for an error that says why it stopped.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

pub(super) fn scratch_dir() -> Result<PathBuf, EmbeddedError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "keyway-redis-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| EmbeddedError(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

impl EmbeddedRedis {
    /// Start a server and wait until it answers `PING`.
    pub fn start(options: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        EmbeddedRedis::start_secured(options, EmbeddedSecurity::default())
    }

    /// Start a server with a password and/or a TLS port, and wait until it answers `PING`.
    pub fn start_secured(
        options: EmbeddedOptions,
        security: EmbeddedSecurity,
    ) -> Result<Self, EmbeddedError> {
        let binary = find_binary()?;
        let mut last_error = None;
        // A port found free can be taken before the server binds it: try again on that, and
        // only on that. Each attempt has a directory of its own, which its server removes when
        // it is dropped.
        for _ in 0..10 {
            let port = free_port()?;
            let tls_port = match &security.tls {
                Some(_) => Some(free_port()?).filter(|p| *p != port),
                None => None,
            };
            if security.tls.is_some() && tls_port.is_none() {
                continue;
            }
            let bus_port = match options.cluster_node {
                true => Some(free_port()?).filter(|p| *p != port && Some(*p) != tls_port),
                false => None,
            };
            if options.cluster_node && bus_port.is_none() {
                continue;
            }
            let mut server = EmbeddedRedis {
                child: None,
                port,
                tls_port,
                bus_port,
                dir: scratch_dir()?,
                binary: binary.clone(),
                options: options.clone(),
                security: security.clone(),
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let port_taken = e.0.contains("Address already in use");
                    last_error = Some(e);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| EmbeddedError("redis-server did not start".into())))
    }

    fn spawn(&mut self) -> Result<(), EmbeddedError> {
        let append = if self.options.append_only {
            "yes"
        } else {
            "no"
        };
        let log = self.dir.join("redis.log");
        let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
        let mut command = Command::new(&self.binary);
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
        if let Some(password) = &self.security.password {
            command.args(["--requirepass", password]);
        }
        if let (Some(tls), Some(port)) = (&self.security.tls, self.tls_port) {
            command
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_file)
                .args([
                    "--tls-auth-clients",
                    if tls.auth_clients { "yes" } else { "no" },
                ]);
        }
        if let Some(bus) = self.bus_port {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ]);
            command.args(["--cluster-config-file", "nodes.conf"]);
        }
        let child = command
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                append,
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .args(["--maxmemory-policy", "noeviction"])
            .args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| EmbeddedError(format!("cannot run {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        self.wait_ready(log_start, Duration::from_secs(20))
    }

    /// Wait until this child says it is ready in its log (written past `log_start`) and its
    /// port answers: a `PONG` alone could come from another server that holds the port.
    fn wait_ready(&mut self, log_start: u64, timeout: Duration) -> Result<(), EmbeddedError> {
        let log = self.dir.join("redis.log");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(EmbeddedError(format!(
                        "redis-server exited with {status}: {} (see {})",
                        log_tail(&log),
                        log.display()
                    )));
                }
            }
            if logged_ready(&log, log_start) && ping(self.port, self.security.password.as_deref()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError(format!(
                    "redis-server on port {} did not answer PING within {timeout:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its TLS port, when started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `rediss://127.0.0.1:<tls port>`, when started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}"))
    }

    /// Its cluster bus port, when started as a cluster node.
    pub fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL the server (no shutdown, no final fsync) and wait for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same port and directory (it reloads its append-only
    /// file).
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The port may linger briefly after a kill.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

impl Drop for EmbeddedRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command in the protocol's array form, so any bytes (a password) can be sent.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Whether a server on `port` answers `PING` with `PONG` (not `LOADING`), authenticating
/// first when it has a password.
fn ping(port: u16, password: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut request = Vec::new();
    if let Some(password) = password {
        request.extend(resp(&[b"AUTH", password.as_bytes()]));
    }
    request.extend(resp(&[b"PING"]));
    if stream.write_all(&request).is_err() {
        return false;
    }
    let replies = if password.is_some() { 2 } else { 1 };
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|b| **b == b'\n').count() < replies {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let expected: &[u8] = if password.is_some() {
        b"+OK\r\n+PONG"
    } else {
        b"+PONG"
    };
    got.starts_with(expected)
}
