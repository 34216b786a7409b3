//! TLS for `rediss://` connections, with rustls on the ring provider (no OpenSSL, no aws-lc).
//!
//! - The server's certificate is verified against the system roots (read with
//!   rustls-native-certs, the same store `openssl` and `curl` use), or, when
//!   `redis.tls_ca_file` is set, against the certificates of that file alone.
//! - It must be valid now and for the URL's host, or for `redis.tls_server_name`, which is
//!   also the name sent as SNI. For a cluster, the name is used for every node the client
//!   discovers (nodes are announced by IP address).
//! - `redis.tls_cert_file` and `redis.tls_key_file` present a client certificate, for servers
//!   started with `tls-auth-clients yes`.
//! - Files are PEM. A file that cannot be read, holds no certificate (or key), or does not
//!   parse is an error naming the key and the file.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use fred::rustls::crypto::ring;
use fred::rustls::pki_types::pem::{self, PemObject};
use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use fred::rustls::{ClientConfig, RootCertStore};
use fred::types::config::{HostMapping, TlsConfig, TlsHostMapping};

use super::config::{ConfigError, RedisConfig};

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no PEM section of the expected kind in it".to_owned(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key, format!("{}: {}", path.display(), pem_problem(e))))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!(
                "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound => {
                "no private key in it (expected PKCS#8, PKCS#1 or SEC1 PEM)".to_owned()
            }
            other => pem_problem(other),
        };
        ConfigError::new(key, format!("{}: {problem}", path.display()))
    })
}

fn ca_roots(path: &Path) -> Result<RootCertStore, ConfigError> {
    let key = "redis.tls_ca_file";
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(key, path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            ConfigError::new(
                key,
                format!(
                    "{}: certificate {} is not usable as a CA: {e}",
                    path.display(),
                    i + 1
                ),
            )
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = fred::rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _unusable) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(ConfigError::new(
            "redis.tls_ca_file",
            format!(
                "is not set and no system root certificates were found{why}: install the system CA bundle (Debian: ca-certificates) or set it to the CA that signed the server's certificate"
            ),
        ));
    }
    Ok(roots)
}

/// Read the files the TLS keys name, to fail early with their names. The system roots are
/// not read.
pub(crate) fn check_files(redis: &RedisConfig) -> Result<(), ConfigError> {
    if let Some(ca) = &redis.tls_ca_file {
        ca_roots(ca)?;
    }
    if let Some(cert) = &redis.tls_cert_file {
        certificates("redis.tls_cert_file", cert)?;
    }
    if let Some(key) = &redis.tls_key_file {
        private_key("redis.tls_key_file", key)?;
    }
    if let Some(name) = &redis.tls_server_name {
        server_name(name)?;
    }
    Ok(())
}

fn server_name(name: &str) -> Result<ServerName<'static>, ConfigError> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        ConfigError::new(
            "redis.tls_server_name",
            format!("{name:?} is not a DNS name or an IP address"),
        )
    })
}

/// One name for every cluster node's handshake.
#[derive(Debug)]
struct FixedName(String);

impl HostMapping for FixedName {
    fn map(&self, _ip: &IpAddr, _default_host: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

/// The client's TLS settings for `redis`.
pub(crate) fn tls_config(redis: &RedisConfig) -> Result<TlsConfig, ConfigError> {
    let roots = match &redis.tls_ca_file {
        Some(ca) => ca_roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("redis.url", format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots);
    let client = match (&redis.tls_cert_file, &redis.tls_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("redis.tls_cert_file", cert)?;
            let private = private_key("redis.tls_key_file", key)?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                ConfigError::new(
                    "redis.tls_key_file",
                    format!(
                        "{} does not fit the certificate in {}: {e}",
                        key.display(),
                        cert.display()
                    ),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    let hostnames = match &redis.tls_server_name {
        Some(name) => {
            server_name(name)?;
            TlsHostMapping::Custom(Arc::new(FixedName(name.clone())))
        }
        None => TlsHostMapping::None,
    };
    Ok(TlsConfig {
        connector: client.into(),
        hostnames,
    })
}

/// A handshake failure as one line that says what to check, from the text fred keeps of the
/// rustls error; `None` when the text is not a TLS failure.
pub(crate) fn explain_handshake(details: &str) -> Option<String> {
    let certificate = |why: &str| Some(format!("the server's TLS certificate was refused: {why}"));
    if details.contains("UnknownIssuer") || details.contains("BadSignature") {
        return certificate(
            "it is not signed by a trusted CA (check redis.tls_ca_file, or the system roots when it is not set)",
        );
    }
    if details.contains("NotValidForName") {
        return certificate(
            "it is not valid for the host of redis.url (set redis.tls_server_name to a name it carries)",
        );
    }
    if details.contains("Expired") {
        return certificate("it has expired");
    }
    if details.contains("NotValidYet") {
        return certificate("it is not valid yet (check the clocks)");
    }
    if details.contains("Revoked") {
        return certificate("it was revoked");
    }
    if details.contains("InvalidCertificate") {
        let why = details
            .split("InvalidCertificate(")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or("invalid");
        return certificate(&why.to_ascii_lowercase());
    }
    if details.contains("CertificateRequired") {
        return Some(
            "the server requires a client certificate (set redis.tls_cert_file and redis.tls_key_file)"
                .to_owned(),
        );
    }
    for alert in [
        "UnknownCA",
        "BadCertificate",
        "CertificateUnknown",
        "CertificateExpired",
    ] {
        if details.contains(&format!("AlertReceived({alert})")) {
            return Some(format!(
                "the server refused the client certificate of redis.tls_cert_file ({alert})"
            ));
        }
    }
    if details.contains("AlertReceived(HandshakeFailure)") {
        return Some(
            "the server refused the TLS handshake (a client certificate it requires, or no protocol in common)"
                .to_owned(),
        );
    }
    if details.contains("AlertReceived") {
        let alert = details
            .split("AlertReceived(")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or("an alert");
        return Some(format!("the server ended the TLS handshake ({alert})"));
    }
    if details.contains("InvalidContentType")
        || details.contains("InvalidMessage")
        || details.contains("CorruptMessage")
    {
        return Some(
            "the server did not answer in TLS: is this a plaintext port? (use redis:// for one)"
                .to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_read_as_what_to_check() {
        for (details, expected) in [
            (
                "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
                "not signed by a trusted CA",
            ),
            (
                "Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { expected: DnsName(\"x\"), presented: [] }) }",
                "redis.tls_server_name",
            ),
            (
                "Custom { kind: InvalidData, error: InvalidCertificate(ExpiredContext { time: UnixTime(1), not_after: UnixTime(0) }) }",
                "it has expired",
            ),
            (
                "Custom { kind: InvalidData, error: AlertReceived(CertificateRequired) }",
                "requires a client certificate",
            ),
            (
                "Custom { kind: InvalidData, error: AlertReceived(UnknownCA) }",
                "refused the client certificate of redis.tls_cert_file (UnknownCA)",
            ),
            (
                "Custom { kind: InvalidData, error: InvalidMessage(InvalidContentType) }",
                "plaintext port",
            ),
        ] {
            let text = explain_handshake(details).unwrap_or_default();
            assert!(text.contains(expected), "{details}: {text}");
        }
        assert_eq!(explain_handshake("Connection refused"), None);
    }
}
