//! TLS against a real `redis-server` with a TLS port, on throwaway certificates made here: a
//! CA, server certificates for `127.0.0.1`, for another name, and one that expired, a client
//! certificate, and a CA that signed none of them.
//!
//! - A trusted CA connects and carries a publish and a delivery; every refusal (an unknown CA,
//!   a name the certificate does not carry, an expired certificate, TLS to a plaintext port,
//!   no client certificate where one is required) fails the connect with one line that says
//!   what to check.
//! - A Redis Cluster whose nodes talk TLS to clients and to each other, with a password,
//!   carries messages to every master.
//! - When the installed `redis-server` was built without TLS, each test prints that it was
//!   skipped and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyway_conformance::backend_suite::{log, patient, send, wait_for, Recorder, HANG_GUARD};
use keyway_runtime::redis::{
    Config, EmbeddedCluster, EmbeddedOptions, EmbeddedRedis, EmbeddedSecurity, EmbeddedTls,
    Password, RedisBackend, Registry, Shutdown,
};
use keyway_runtime::transport::PublishReceipt;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Whether the installed `redis-server` accepts TLS options: a build without TLS rejects the
/// `tls-port` directive at once; a build with it then finds no port to listen on and exits.
fn tls_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let binary =
            std::env::var_os("KEYWAY_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let Ok(mut child) = Command::new(binary)
            .args([
                "--port",
                "0",
                "--tls-port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            return false;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let output = child.wait_with_output().expect("redis-server output");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        !text.contains("Bad directive") && !text.contains("TLS is not supported")
    })
}

macro_rules! require_tls {
    () => {
        if !tls_supported() {
            println!("skipped: redis-server built without TLS");
            return;
        }
    };
}

/// A CA that can sign certificates, and its PEM file.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    file: PathBuf,
}

/// Certificates and keys in a scratch directory, removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "keyway-tls-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn ca(&self, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap();
        let file = self.write(&format!("{name}.pem"), &cert.pem());
        Ca {
            issuer: Issuer::new(params, key),
            file,
        }
    }

    /// A leaf certificate signed by `ca` for `names`, for a server or a client; its (certificate,
    /// key) files. `expired` makes it valid in 2000 only.
    fn leaf(
        &self,
        ca: &Ca,
        name: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2000, 12, 31);
        }
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (
            self.write(&format!("{name}.pem"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }

    /// A certificate a cluster node presents both as a server and, to the other nodes, as a
    /// client.
    fn node_cert(&self, ca: &Ca, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (
            self.write(&format!("{name}.pem"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }

    fn server_cert(
        &self,
        ca: &Ca,
        name: &str,
        names: &[&str],
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        self.leaf(
            ca,
            name,
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            expired,
        )
    }
}

/// A server whose TLS port presents `cert`; clients' certificates must be signed by `ca` when
/// `auth_clients`.
fn server(cert: &(PathBuf, PathBuf), ca: &Path, auth_clients: bool) -> EmbeddedRedis {
    EmbeddedRedis::start_secured(
        EmbeddedOptions {
            append_only: false,
            ..Default::default()
        },
        EmbeddedSecurity {
            password: None,
            tls: Some(EmbeddedTls {
                cert_file: cert.0.clone(),
                key_file: cert.1.clone(),
                ca_file: ca.to_owned(),
                auth_clients,
            }),
        },
    )
    .expect("redis-server starts with TLS")
}

fn config(url: String, ca: &Path) -> Config {
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = url;
    config.redis.tls_ca_file = Some(ca.to_owned());
    config.redis.shutdown_deadline = HANG_GUARD;
    config
}

async fn connect(config: Config) -> Result<RedisBackend, String> {
    tokio::time::timeout(HANG_GUARD, RedisBackend::connect(config))
        .await
        .expect("connecting ends")
        .map(|(b, _)| b)
        .map_err(|e| e.to_string())
}

/// The connect fails with one line containing `expected`.
async fn refused(config: Config, expected: &str) -> String {
    let error = connect(config)
        .await
        .expect_err("the connection is refused");
    assert!(!error.contains('\n'), "one line: {error:?}");
    assert!(error.contains(expected), "{error}");
    error
}

/// Publish one message and have it delivered, through `b`.
async fn round_trip(b: &RedisBackend) {
    assert_eq!(
        send(b, "orders", "o-1", "k", "over tls").await,
        PublishReceipt::Published
    );
    let seen = log();
    let (trigger, shutdown) = Shutdown::new();
    let backend = b.clone();
    let task = tokio::spawn({
        let recorder = Recorder::acking("c", &seen);
        async move {
            backend
                .run(patient("orders", "g"), recorder, shutdown)
                .await
        }
    });
    let got = wait_for(&seen, 1, HANG_GUARD).await;
    assert_eq!(
        (got[0].id.as_str(), got[0].payload.as_str()),
        ("o-1", "over tls")
    );
    trigger.trigger();
    tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("the consumer stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_ca_connects_and_a_wrong_one_is_refused() {
    require_tls!();
    let pki = Pki::new("trust");
    let ca = pki.ca("ca");
    let other = pki.ca("other-ca");
    let cert = pki.server_cert(&ca, "server", &["127.0.0.1"], false);
    let redis = server(&cert, &ca.file, false);
    let url = redis.tls_url().unwrap();

    let b = connect(config(url.clone(), &ca.file))
        .await
        .expect("connects over TLS");
    round_trip(&b).await;

    let error = refused(
        config(url.clone(), &other.file),
        "not signed by a trusted CA",
    )
    .await;
    assert!(
        error.starts_with(&format!("cannot connect to Redis at {url}: ")),
        "{error}"
    );
    // Without a CA file the system roots are used, which do not know this CA either.
    let mut system = config(url, &ca.file);
    system.redis.tls_ca_file = None;
    refused(system, "not signed by a trusted CA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_certificate_does_not_carry_is_refused_until_tls_server_name_names_it() {
    require_tls!();
    let pki = Pki::new("names");
    let ca = pki.ca("ca");
    let cert = pki.server_cert(&ca, "server", &["redis.test"], false);
    let redis = server(&cert, &ca.file, false);
    let url = redis.tls_url().unwrap();

    refused(config(url.clone(), &ca.file), "redis.tls_server_name").await;
    let mut wrong = config(url.clone(), &ca.file);
    wrong.redis.tls_server_name = Some("elsewhere.test".into());
    refused(wrong, "not valid for the host").await;

    let mut named = config(url, &ca.file);
    named.redis.tls_server_name = Some("redis.test".into());
    let b = connect(named).await.expect("connects with the server name");
    round_trip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    require_tls!();
    let pki = Pki::new("expired");
    let ca = pki.ca("ca");
    let cert = pki.server_cert(&ca, "server", &["127.0.0.1"], true);
    let redis = server(&cert, &ca.file, false);
    refused(config(redis.tls_url().unwrap(), &ca.file), "it has expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plaintext_port_and_plaintext_to_a_tls_port_are_refused() {
    require_tls!();
    let pki = Pki::new("ports");
    let ca = pki.ca("ca");
    let cert = pki.server_cert(&ca, "server", &["127.0.0.1"], false);
    let redis = server(&cert, &ca.file, false);

    let tls_to_plain = format!("rediss://127.0.0.1:{}", redis.port());
    let started = Instant::now();
    refused(config(tls_to_plain, &ca.file), "plaintext port").await;
    assert!(started.elapsed() < HANG_GUARD);

    // A plaintext URL with TLS keys is refused before anything is sent.
    let plain_to_tls = format!("redis://127.0.0.1:{}", redis.tls_port().unwrap());
    refused(
        config(plain_to_tls.clone(), &ca.file),
        "config key `redis.tls_ca_file`: is set, but redis.url",
    )
    .await;
    let mut bare = config(plain_to_tls, &ca.file);
    bare.redis.tls_ca_file = None;
    refused(bare, "(is it a TLS port? use rediss:// for one)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_takes_a_client_certificate_and_refuses_none() {
    require_tls!();
    let pki = Pki::new("mutual");
    let ca = pki.ca("ca");
    let cert = pki.server_cert(&ca, "server", &["127.0.0.1"], false);
    let client = pki.leaf(
        &ca,
        "client",
        &["keyway.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
    );
    let stranger_ca = pki.ca("stranger-ca");
    let stranger = pki.leaf(
        &stranger_ca,
        "stranger",
        &["keyway.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
        false,
    );
    let redis = server(&cert, &ca.file, true);
    let url = redis.tls_url().unwrap();

    let mut with_cert = config(url.clone(), &ca.file);
    with_cert.redis.tls_cert_file = Some(client.0.clone());
    with_cert.redis.tls_key_file = Some(client.1.clone());
    let b = connect(with_cert)
        .await
        .expect("connects with a client certificate");
    round_trip(&b).await;

    refused(
        config(url.clone(), &ca.file),
        "requires a client certificate",
    )
    .await;
    let mut wrong = config(url, &ca.file);
    wrong.redis.tls_cert_file = Some(stranger.0);
    wrong.redis.tls_key_file = Some(stranger.1);
    refused(
        wrong,
        "refused the client certificate of redis.tls_cert_file",
    )
    .await;

    // A certificate without its key is a configuration error naming the missing key.
    let mut half = config(redis.tls_url().unwrap(), &ca.file);
    half.redis.tls_cert_file = Some(client.0);
    refused(half, "config key `redis.tls_key_file`: is required").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_a_password_carries_messages_to_every_master() {
    require_tls!();
    let pki = Pki::new("cluster");
    let ca = pki.ca("ca");
    let cert = pki.node_cert(&ca, "node");
    let security = EmbeddedSecurity {
        password: Some("cluster-secret".into()),
        tls: Some(EmbeddedTls {
            cert_file: cert.0.clone(),
            key_file: cert.1.clone(),
            ca_file: ca.file.clone(),
            auth_clients: false,
        }),
    };
    let options = EmbeddedOptions {
        append_only: false,
        ..Default::default()
    };
    let cluster = tokio::task::spawn_blocking(move || {
        EmbeddedCluster::start_secured(3, 1, options, security)
    })
    .await
    .unwrap()
    .expect("a TLS cluster with a password starts");
    let url = cluster.tls_url().unwrap();
    assert!(url.starts_with("rediss-cluster://127.0.0.1:"), "{url}");

    let mut with_password = config(url.clone(), &ca.file);
    with_password.redis.password = Some(Password::new("cluster-secret"));
    // Spread over buckets, so the messages reach streams on every master.
    with_password.registry.set_buckets("orders", 12).unwrap();
    let b = connect(with_password).await.expect("connects over TLS");
    let seen = log();
    let (trigger, shutdown) = Shutdown::new();
    let backend = b.clone();
    let task = tokio::spawn({
        let recorder = Recorder::acking("c", &seen);
        async move {
            backend
                .run(patient("orders", "g"), recorder, shutdown)
                .await
        }
    });
    for i in 0..24 {
        let id = format!("o-{i}");
        let key = format!("k{i}");
        assert_eq!(
            send(&b, "orders", &id, &key, "over tls").await,
            PublishReceipt::Published
        );
    }
    let got = wait_for(&seen, 24, HANG_GUARD).await;
    assert_eq!(got.len(), 24);
    trigger.trigger();
    tokio::time::timeout(HANG_GUARD, task)
        .await
        .expect("the consumer stops")
        .unwrap()
        .unwrap();
    let mut holding = 0;
    for master in cluster.masters().unwrap() {
        let keys = cluster.command(master, &["DBSIZE"]).unwrap();
        holding += usize::from(keys.trim().parse::<u64>().unwrap() > 0);
    }
    assert_eq!(holding, 3, "every master holds some of the streams");

    // No password: refused, saying where a password would come from, and never showing one.
    let error = refused(config(url, &ca.file), "no password given").await;
    assert!(!error.contains("cluster-secret"), "{error}");
}
