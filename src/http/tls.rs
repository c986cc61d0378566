//! HTTPS: the gateway's own TLS termination, for deployments without a proxy.
//!
//! Owns loading the certificate chain and key (PEM) into a rustls acceptor
//! (TLS 1.2 and 1.3, ring provider, HTTP/1.1 by ALPN). It never decides what
//! to serve; `serve` hands it the accepted TCP streams.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why the TLS acceptor could not be built; each names the file at fault, and
/// keeps the PEM or rustls error as its source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert {}: {source}", path.display())]
    UnreadableCert {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("tls_cert {}: no certificate in the file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("tls_key {}: {source}", path.display())]
    UnreadableKey {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("TLS setup: {0}")]
    ProtocolVersions(#[source] rustls::Error),
    /// The certificate and the key do not go together (or the key is of a kind
    /// rustls does not take).
    #[error("tls_cert {} / tls_key {}: {source}", cert.display(), key.display())]
    CertAndKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Builds the acceptor from the configured files; the error names the file.
pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|source| TlsError::UnreadableCert {
            path: files.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::UnreadableKey {
            path: files.key.clone(),
            source,
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::ProtocolVersions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::CertAndKey {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn files(dir: &tempfile::TempDir, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.path().join(cert),
            key: dir.path().join(key),
        }
    }

    fn write_pair(dir: &tempfile::TempDir, cert: &str, key: &str) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join(cert), pair.cert.pem()).unwrap();
        std::fs::write(dir.path().join(key), pair.signing_key.serialize_pem()).unwrap();
    }

    #[test]
    fn a_missing_certificate_is_named_and_its_cause_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(&dir, "nope.pem", "nope.pem");
        let error = acceptor(&files).err().unwrap();
        assert!(
            matches!(error, TlsError::UnreadableCert { .. }),
            "{error:?}"
        );
        let cause = error.source().expect("the PEM error is kept").to_string();
        assert_eq!(
            error.to_string(),
            format!("tls_cert {}: {cause}", files.cert.display())
        );
    }

    #[test]
    fn an_empty_certificate_file_and_a_mismatched_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(&dir, "a.crt", "a.key");
        write_pair(&dir, "b.crt", "b.key");
        assert!(acceptor(&files(&dir, "a.crt", "a.key")).is_ok());

        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let error = acceptor(&files(&dir, "empty.pem", "a.key")).err().unwrap();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");

        let error = acceptor(&files(&dir, "a.crt", "b.key")).err().unwrap();
        assert!(matches!(error, TlsError::CertAndKey { .. }), "{error:?}");
        assert!(error.source().is_some());
    }
}
