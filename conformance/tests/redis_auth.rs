//! Passwords against a real `redis-server --requirepass`: from a file or the environment
//! instead of the URL, and never shown, in an error or in the configuration's `Debug` and
//! `Display`.

use std::path::{Path, PathBuf};

use keyway_conformance::backend_suite::{send, HANG_GUARD};
use keyway_runtime::redis::{
    Config, EmbeddedOptions, EmbeddedRedis, EmbeddedSecurity, RedisBackend, Registry,
};
use keyway_runtime::transport::PublishReceipt;

const PASSWORD: &str = "correct horse battery staple";

fn server() -> EmbeddedRedis {
    EmbeddedRedis::start_secured(
        EmbeddedOptions {
            append_only: false,
            ..Default::default()
        },
        EmbeddedSecurity {
            password: Some(PASSWORD.into()),
            tls: None,
        },
    )
    .expect("redis-server starts with a password")
}

/// A file holding `contents` in the server's directory.
fn secret_file(server: &EmbeddedRedis, name: &str, contents: &str) -> PathBuf {
    let path = server.dir().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The configuration file's text, loaded with `env` as the environment.
fn load(text: &str, env: &[(&str, &str)]) -> Config {
    Config::from_toml(
        text,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("the configuration loads")
}

fn file_config(server: &EmbeddedRedis, password_file: &Path) -> String {
    format!(
        "[redis]\nurl = \"{}\"\npassword_file = {:?}\n[topics]\norders = \"orders\"\n",
        server.url(),
        password_file.display().to_string()
    )
}

async fn connect(config: Config) -> Result<RedisBackend, String> {
    tokio::time::timeout(HANG_GUARD, RedisBackend::connect(config))
        .await
        .expect("connecting ends")
        .map(|(b, _)| b)
        .map_err(|e| e.to_string())
}

/// Nothing shown about `config` contains `secret`.
fn never_shows(config: &Config, secret: &str) {
    for text in [format!("{config:?}"), config.redis.to_string()] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_connects() {
    let server = server();
    // A file written by `echo`: the trailing newline is not part of the password.
    let file = secret_file(&server, "redis-password", &format!("{PASSWORD}\n"));
    let config = load(&file_config(&server, &file), &[]);
    never_shows(&config, PASSWORD);
    let b = connect(config)
        .await
        .expect("connects with the password from the file");
    assert_eq!(
        send(&b, "orders", "o-1", "k", "x").await,
        PublishReceipt::Published
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_wins_over_the_file_and_the_url() {
    let server = server();
    let wrong = secret_file(&server, "stale-password", "stale\n");
    let right = secret_file(&server, "mounted-password", PASSWORD);
    let with_url = format!(
        "[redis]\nurl = \"redis://:in-the-url@127.0.0.1:{}\"\npassword_file = {:?}\n[topics]\norders = \"orders\"\n",
        server.port(),
        wrong.display().to_string()
    );
    let right_path = right.display().to_string();
    for env in [
        vec![("REDIS_PASSWORD", PASSWORD)],
        vec![("REDIS_PASSWORD_FILE", right_path.as_str())],
    ] {
        let config = load(&with_url, &env);
        never_shows(&config, PASSWORD);
        never_shows(&config, "in-the-url");
        connect(config)
            .await
            .unwrap_or_else(|e| panic!("{env:?}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_is_one_line_without_the_password() {
    let server = server();
    let file = secret_file(&server, "redis-password", "not-the-password\n");
    let error = connect(load(&file_config(&server, &file), &[]))
        .await
        .expect_err("a wrong password is refused");
    assert!(!error.contains('\n'), "{error:?}");
    assert!(!error.contains("not-the-password"), "{error}");
    assert!(
        error.starts_with(&format!("cannot connect to Redis at {}: ", server.url())),
        "{error}"
    );
    assert!(error.contains("WRONGPASS"), "{error}");
    assert!(
        error.ends_with(&format!("(password from password file {})", file.display())),
        "{error}"
    );

    // In the URL, the password is redacted from the error too.
    let mut in_url = load("[topics]\norders = \"orders\"\n", &[]);
    in_url.redis.url = format!("redis://:wrong-in-url@127.0.0.1:{}", server.port());
    never_shows(&in_url, "wrong-in-url");
    let error = connect(in_url).await.expect_err("refused");
    assert!(!error.contains("wrong-in-url"), "{error}");
    assert!(error.contains("redis://:***@127.0.0.1:"), "{error}");
    assert!(error.ends_with("(password from redis.url)"), "{error}");

    // None at all says where one can be given.
    let mut none = load("[topics]\norders = \"orders\"\n", &[]);
    none.redis.url = server.url();
    let error = connect(none).await.expect_err("refused");
    assert!(error.contains("NOAUTH"), "{error}");
    assert!(
        error.contains("set redis.password_file, REDIS_PASSWORD_FILE or REDIS_PASSWORD"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_comes_from_the_username_key() {
    let server = server();
    let mut config = Config {
        redis: Default::default(),
        registry: Registry::identity(["orders"]).unwrap(),
        subscriptions: Default::default(),
    };
    config.redis.url = server.url();
    config.redis.password = Some(keyway_runtime::redis::Password::new(PASSWORD));
    let admin = connect(config.clone()).await.expect("connects as default");
    let acl: Vec<fred::prelude::Value> = ["SETUSER", "app", "on", ">app-secret", "~*", "+@all"]
        .into_iter()
        .map(Into::into)
        .collect();
    fred::prelude::ClientLike::custom::<fred::prelude::Value, _>(
        admin.client(),
        fred::types::CustomCommand::new_static("ACL", fred::types::ClusterHash::Random, false),
        acl,
    )
    .await
    .unwrap();
    config.redis.username = Some("app".into());
    config.redis.password = Some(keyway_runtime::redis::Password::new("app-secret"));
    never_shows(&config, "app-secret");
    let app = connect(config.clone()).await.expect("connects as app");
    assert_eq!(
        send(&app, "orders", "o-1", "k", "x").await,
        PublishReceipt::Published
    );
    config.redis.password = Some(keyway_runtime::redis::Password::new("nope"));
    let error = connect(config).await.expect_err("refused");
    assert!(
        error.contains("WRONGPASS") && !error.contains("nope"),
        "{error}"
    );
    assert!(
        error.ends_with("(password from the configuration)"),
        "{error}"
    );
}
