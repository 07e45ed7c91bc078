//! rustls client configurations for links that leave the box (MQTT broker, Kafka), from the
//! PEM files named in a [`TlsConfig`] table. Always the ring crypto provider (no aws-lc, no
//! OpenSSL: cross-compiles for ARM with only a C compiler), TLS 1.2 and 1.3, server certificates
//! verified against the configured CA only (not the system store: a plant's broker is signed by
//! the plant's CA, and trusting public CAs there would only widen the attack surface).

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use crate::config::TlsConfig;

/// Why a TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: String, source: std::io::Error },
    #[error("{what} {path} contains no usable PEM {expected}")]
    Pem { what: &'static str, path: String, expected: &'static str },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting `tls.ca_file`, with a client certificate for mutual TLS when
/// `client_cert_file` and `client_key_file` are both set.
pub fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, TlsSetupError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsSetupError::Read { what, path: path.display().to_string(), source })
    };
    let pem_error = |what, path: &Path, expected| TlsSetupError::Pem { what, path: path.display().to_string(), expected };
    let ca = read("CA file", &tls.ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(ca.as_slice())).flatten() {
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(pem_error("CA file", &tls.ca_file, "certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let cert_pem = read("client certificate", cert_path)?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_slice())).flatten().collect();
            if certs.is_empty() {
                return Err(pem_error("client certificate", cert_path, "certificate"));
            }
            let key_pem = read("client key", key_path)?;
            let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
                .ok()
                .flatten()
                .ok_or_else(|| pem_error("client key", key_path, "private key"))?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    })
}
