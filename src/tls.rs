//! TLS: rustls with the `ring` provider, to PostgreSQL, Redis and Agones (the
//! allocator service over mTLS, or the Kubernetes API trusting its CA).
//!
//! PostgreSQL takes libpq's `sslmode` and `sslrootcert` from its URL (tokio-postgres
//! knows neither `verify-ca`/`verify-full` nor `sslrootcert`, so they are taken out
//! here before it parses the rest); Redis takes `rediss://` and `REDIS_CA_FILE`.

use std::path::Path;
use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Makes `ring` the process's rustls provider, once. Every TLS configuration this
/// crate builds (and the ones the redis client builds) goes through here first, so
/// no code path depends on rustls guessing a provider from crate features.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only if another provider was installed first (by an embedder): keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<CryptoProvider> {
    install_provider();
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Reads a PEM file of CA certificates; the error is one line, naming `what` and the file.
pub fn read_ca_file(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_certs(path, what)?;
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| format!("{what} {}: unusable CA certificate ({e})", path.display()))?;
    }
    Ok(certs)
}

/// The certificates of a PEM file (at least one).
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate in the file", path.display()));
    }
    Ok(certs)
}

/// A client that trusts only the CAs of `ca` and shows the chain `cert` with its
/// private key `key` (mTLS); each is (setting, file), named in the one-line error.
pub fn mtls_client(ca: (&str, &Path), cert: (&str, &Path), key: (&str, &Path)) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(read_ca_file(ca.1, ca.0)?);
    let chain = read_certs(cert.1, cert.0)?;
    let key_pem = std::fs::read(key.1).map_err(|e| format!("{} {}: {e}", key.0, key.1.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{} {}: no PEM private key ({e})", key.0, key.1.display()))?;
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| format!("{} and {} do not make a usable client certificate: {e}", cert.0, key.0))
}

/// A client that trusts only the CAs of `ca` (setting, file) and shows no
/// certificate: the Kubernetes API, where a bearer token authenticates.
pub fn ca_client(ca: (&str, &Path)) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(read_ca_file(ca.1, ca.0)?);
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that is never used for a handshake (a plain `http://`
/// endpoint behind a connector that could also speak TLS).
pub fn unused_client() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// The machine's trusted roots (the system store), as rustls wants them.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!("no system CA certificates found{why}; give the CA file with sslrootcert="));
    }
    Ok(roots)
}

/// `sslmode` as libpq has it (tokio-postgres parses only the first three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl PgSslMode {
    fn parse(value: &str) -> Result<PgSslMode, String> {
        Ok(match value {
            "disable" => PgSslMode::Disable,
            // libpq's `allow` tries plain text first; tokio-postgres cannot: closest is prefer.
            "allow" | "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            other => {
                return Err(format!("sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"))
            }
        })
    }
}

/// A PostgreSQL URL ready to connect: tokio-postgres' configuration plus the TLS
/// connector its `sslmode`/`sslrootcert` call for.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub mode: PgSslMode,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// Parses a PostgreSQL URL or keyword/value string, libpq's TLS parameters included:
/// - `sslmode=disable`: plain text; `prefer` (the default): TLS when the server offers
///   it; `require`: TLS or nothing. None of these checks the certificate, as in libpq,
///   except that `require` with an `sslrootcert` acts as `verify-ca` (libpq does too).
/// - `verify-ca`: the certificate must chain to the CA; `verify-full`: and name the host.
/// - `sslrootcert=/path/ca.pem`: the CA(s) to trust; absent: the system's.
/// - `sslrootcert=system`: the system's roots, and (libpq ≥ 16) `verify-full` is its
///   default `sslmode` and the only one allowed with it: a weaker one is an error.
///
/// The error is one line.
pub fn pg_target(url: &str) -> Result<PgTarget, String> {
    let (rest, mode, rootcert) = take_ssl_params(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| format!("{e}"))?;
    let mode = ssl_mode(mode.as_deref(), rootcert.as_deref())?;
    config.ssl_mode(match mode {
        PgSslMode::Disable => SslMode::Disable,
        PgSslMode::Prefer => SslMode::Prefer,
        PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull => SslMode::Require,
    });
    let roots = match rootcert.as_deref() {
        None | Some(SYSTEM_ROOTS) => None,
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_ca_file(Path::new(path), "sslrootcert")? {
                roots.add(cert).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
            Some(roots)
        }
    };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let verify_chain = match mode {
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => true,
        PgSslMode::Require => roots.is_some(),
        PgSslMode::Disable | PgSslMode::Prefer => false,
    };
    let client = if verify_chain {
        let roots = match roots {
            Some(roots) => roots,
            None => system_roots()?,
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        if mode == PgSslMode::VerifyFull {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(webpki))).with_no_client_auth()
        }
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(EncryptOnly(provider))).with_no_client_auth()
    };
    Ok(PgTarget { config, tls: MakeRustlsConnect::new(client), mode })
}

/// The `sslrootcert` value that names the system's roots.
const SYSTEM_ROOTS: &str = "system";

/// The `sslmode` to use: the one given, else `prefer`, or `verify-full` with
/// `sslrootcert=system`, which (as in libpq ≥ 16) refuses any weaker mode: trusting
/// every public CA only means something when the host name is checked too.
fn ssl_mode(given: Option<&str>, rootcert: Option<&str>) -> Result<PgSslMode, String> {
    let system = rootcert == Some(SYSTEM_ROOTS);
    match given {
        None if system => Ok(PgSslMode::VerifyFull),
        None => Ok(PgSslMode::Prefer),
        Some(given) => match PgSslMode::parse(given)? {
            mode if system && mode != PgSslMode::VerifyFull => Err(format!(
                "weak sslmode {given:?} may not be used with sslrootcert={SYSTEM_ROOTS} (use \"verify-full\")"
            )),
            mode => Ok(mode),
        },
    }
}

/// Splits `sslmode` and `sslrootcert` off a PostgreSQL URL (`postgres://…?k=v&…`) or
/// keyword/value string (`host=… sslmode=…`): (the rest, sslmode, sslrootcert).
fn take_ssl_params(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let (mut mode, mut rootcert) = (None, None);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(percent_decode(value)?),
                "sslrootcert" => rootcert = Some(percent_decode(value)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, mode, rootcert));
    }
    let mut kept = String::new();
    for (key, value) in keyword_pairs(url)? {
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => rootcert = Some(value),
            _ => {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push_str(&format!("{key}='{quoted}' "));
            }
        }
    }
    Ok((kept, mode, rootcert))
}

/// `key=value key='quoted \' value'` pairs, as libpq (and tokio-postgres) read them.
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing '=' after {key:?} in the connection string"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent-encoding in {s:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// `sslmode=prefer`/`require` without a CA: the link is encrypted, the server's
/// certificate not checked (libpq's behaviour). The handshake itself is still verified
/// (the server must hold the key of the certificate it shows).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted CA; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name error means the chain held.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The certificates the redis client trusts for `rediss://`: the CA file's, or (None)
/// the system's. Also installs the provider the redis client's rustls will use.
pub fn redis_certs(ca_file: Option<&Path>) -> Result<Option<redis::TlsCertificates>, String> {
    install_provider();
    let Some(path) = ca_file else { return Ok(None) };
    read_ca_file(path, "REDIS_CA_FILE")?;
    let pem = std::fs::read(path).map_err(|e| format!("REDIS_CA_FILE {}: {e}", path.display()))?;
    Ok(Some(redis::TlsCertificates { client_tls: None, root_cert: Some(pem) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_form_loses_the_libpq_only_parameters() {
        let (rest, mode, root) = take_ssl_params(
            "postgres://u:p@db.example:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db.example:5432/app?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca dir/ca.pem"));
        let (rest, mode, root) = take_ssl_params("postgresql://h/db?sslrootcert=/ca.pem").unwrap();
        assert_eq!((rest.as_str(), mode, root.as_deref()), ("postgresql://h/db", None, Some("/ca.pem")));
        assert_eq!(take_ssl_params("postgres://h/db").unwrap().0, "postgres://h/db");
    }

    #[test]
    fn keyword_form_loses_the_libpq_only_parameters() {
        let (rest, mode, root) =
            take_ssl_params("host=db port = 5433 password='it\\'s secret' sslmode=verify-ca sslrootcert='/a b/ca.pem'")
                .unwrap();
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/a b/ca.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's secret"[..]));
        assert_eq!(config.get_ports(), &[5433]);
        assert!(take_ssl_params("host=db sslrootcert='/unterminated").is_err());
    }

    #[test]
    fn modes_map_onto_tokio_postgres() {
        for (url, mode, ssl) in [
            ("postgres://h/db", PgSslMode::Prefer, SslMode::Prefer),
            ("postgres://h/db?sslmode=disable", PgSslMode::Disable, SslMode::Disable),
            ("postgres://h/db?sslmode=require", PgSslMode::Require, SslMode::Require),
            ("host=h sslmode=verify-ca", PgSslMode::VerifyCa, SslMode::Require),
        ] {
            let target = pg_target(url).unwrap();
            assert_eq!((target.mode, target.config.get_ssl_mode()), (mode, ssl), "{url}");
        }
    }

    /// As libpq ≥ 16: `sslrootcert=system` means verify-full, and nothing weaker.
    #[test]
    fn system_roots_mean_verify_full() {
        assert_eq!(ssl_mode(None, Some("system")), Ok(PgSslMode::VerifyFull));
        assert_eq!(ssl_mode(Some("verify-full"), Some("system")), Ok(PgSslMode::VerifyFull));
        assert_eq!(ssl_mode(None, None), Ok(PgSslMode::Prefer));
        assert_eq!(ssl_mode(Some("require"), Some("/ca.pem")), Ok(PgSslMode::Require));
        for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
            assert_eq!(
                ssl_mode(Some(weak), Some("system")),
                Err(format!(r#"weak sslmode "{weak}" may not be used with sslrootcert=system (use "verify-full")"#))
            );
        }
        for url in ["postgres://h/db?sslrootcert=system", "host=h sslrootcert=system"] {
            let target = pg_target(url).unwrap();
            assert_eq!((target.mode, target.config.get_ssl_mode()), (PgSslMode::VerifyFull, SslMode::Require), "{url}");
        }
        assert!(pg_target("postgres://h/db?sslmode=prefer&sslrootcert=system")
            .unwrap_err()
            .starts_with("weak sslmode"));
    }

    #[test]
    fn bad_tls_parameters_are_one_line_errors() {
        for bad in [
            "postgres://h/db?sslmode=verify",
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "host=h sslrootcert=/nonexistent/ca.pem",
            "postgres://h/db?sslrootcert=%zz",
        ] {
            let e = pg_target(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
        let not_pem = std::env::temp_dir().join(format!("ocps-notpem-{}", std::process::id()));
        std::fs::write(&not_pem, "hello").unwrap();
        let e = pg_target(&format!("postgres://h/db?sslmode=verify-full&sslrootcert={}", not_pem.display()))
            .expect_err("not a PEM file");
        assert!(e.contains("no PEM certificate"), "{e}");
        assert!(redis_certs(Some(&not_pem)).is_err());
        std::fs::remove_file(not_pem).unwrap();
    }
}
