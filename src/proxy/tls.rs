//! TLS termination (`[server.tls]`, docs/security.md): the certificate
//! chain and key served to clients, swapped in place on reload so new
//! connections get the new pair and open ones go on with theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{load_certs_and_key_files, ClientHello, CryptoProvider, ResolvesServerCert};

/// Why a pair cannot be served, naming the file at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for PairError {}

/// Read and check a pair: both files parse (PEM; the key PKCS#8, PKCS#1
/// or SEC1), and the key is the leaf certificate's.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, PairError> {
    let at = |file: &Path, message: String| PairError {
        file: file.to_path_buf(),
        message,
    };
    for (file, what) in [
        (cert_file, "server.tls.cert_file"),
        (key_file, "server.tls.key_file"),
    ] {
        std::fs::metadata(file).map_err(|e| at(file, format!("{what}: cannot read: {e}")))?;
    }
    let (cert, key) = (path_str(cert_file), path_str(key_file));
    let (chain, key) = match load_certs_and_key_files(&cert, &key) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            let message = "no certificate in the chain file, or no private key in the key file \
                           (PEM expected)";
            return Err(at(cert_file, message.into()));
        }
        Err(e) => return Err(at(cert_file, format!("cannot read the pair: {e}"))),
    };
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| at(key_file, "no TLS crypto provider".into()))?;
    let chain = chain.into_iter().map(|c| c.into_owned()).collect();
    CertifiedKey::from_der(chain, key.clone_key(), provider)
        .map(Arc::new)
        .map_err(|e| {
            let message = format!("the key does not fit the certificate ({e})");
            at(key_file, message)
        })
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The pair new TLS connections are offered; replaced whole on reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(pair: Arc<CertifiedKey>) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::new(pair),
        })
    }

    /// Serve `pair` to connections from now on.
    pub fn replace(&self, pair: Arc<CertifiedKey>) {
        self.current.store(pair);
    }

    /// Pingora's settings for one TLS listener: this store's pair, TLS 1.2
    /// and 1.3 (Pingora's rustls builder offers no other), HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn listener_settings(self: &Arc<Self>) -> pingora::Result<TlsSettings> {
        // No files: the resolver below serves the pair.
        let mut settings = TlsSettings::intermediate("", "")?;
        settings.set_cert_resolver(self.clone());
        settings.enable_h2();
        Ok(settings)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
