//! TLS client settings shared by the channels: the system's CAs, plus one configured CA
//! (for a relay or provider stand-in behind a private CA), with ring as the provider.
//!
//! The configured CA is read once, when the configuration is loaded, into an [`ExtraCa`]:
//! a file that cannot be read or holds no usable certificate stops Herald at start, and
//! making a client configuration from it cannot fail later.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// CA certificates trusted besides the system's, read from a PEM file.
#[derive(Debug, Clone)]
pub struct ExtraCa(Arc<RootCertStore>);

impl ExtraCa {
    /// Reads a PEM file of CA certificates, checking that it holds at least one and that
    /// each can anchor a chain.
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        let mut roots = RootCertStore::empty();
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|e| format!("{} holds an unusable certificate: {e}", path.display()))?;
        }
        Ok(ExtraCa(Arc::new(roots)))
    }
}

/// A client configuration trusting the system's CAs and `extra_ca`, offering `alpn`.
pub fn client_config(extra_ca: Option<&ExtraCa>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ExtraCa(extra)) = extra_ca {
        roots.extend(extra.roots.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Makes ring the process's default TLS provider, for clients built without a
/// configuration of their own (reqwest asks for one). Idempotent.
pub fn install_default_provider() {
    // An error only says that a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
