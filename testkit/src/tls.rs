//! Test certificates, made with rcgen: a CA and certificates it signs, written
//! as PEM files (for MariaDB's `ssl_ca`/`ssl_cert`/`ssl_key` and baton's
//! `[server.tls]` / `tls_ca`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key)?.pem();
        Ok(TestCa { issuer: Issuer::new(params, key), pem })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Write the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, &self.pem)?;
        Ok(())
    }

    /// Issue a certificate for `names` (IP addresses become IP SANs), valid
    /// from `not_before` to `not_after` (years; None: rcgen's wide defaults),
    /// written as `<dir>/<stem>.pem` and `<dir>/<stem>-key.pem`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str], years: Option<(i32, i32)>) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("baton-test"));
        if let Some((from, to)) = years {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}-key.pem")) };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        // mariadbd runs as user mysql.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644))?;
        Ok(files)
    }
}
