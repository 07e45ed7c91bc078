use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{HarnessError, Result};

/// A throw-away PKI made with Debian's `openssl` CLI: a CA, a server certificate for
/// `127.0.0.1` / `localhost`, and a client certificate for mutual TLS. All PEM, ECDSA P-256,
/// valid for 30 days; keys are PKCS#8 (`BEGIN PRIVATE KEY`) with mode 0600.
///
/// The certificates come from an implementation independent of the agent's TLS stack (rustls),
/// so a test also checks that the agent accepts what real deployments hand it.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\n\
keyUsage=critical,keyCertSign,cRLSign\n\
subjectKeyIdentifier=hash\n";

const SERVER_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
keyUsage=critical,digitalSignature,keyEncipherment\n\
extendedKeyUsage=serverAuth\n\
subjectAltName=IP:127.0.0.1,DNS:localhost\n\
subjectKeyIdentifier=hash\n\
authorityKeyIdentifier=keyid\n";

const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
keyUsage=critical,digitalSignature,keyEncipherment\n\
extendedKeyUsage=clientAuth\n\
subjectKeyIdentifier=hash\n\
authorityKeyIdentifier=keyid\n";

/// The common name of the client certificate (`CN=vigil-agent`).
pub const CLIENT_CN: &str = "vigil-agent";

impl Pki {
    /// Writes `ca.crt`, `ca.key`, `server.crt`, `server.key`, `client.crt`, `client.key` into
    /// `dir` (created if missing). Takes ~50 ms.
    pub fn generate(dir: impl AsRef<Path>) -> Result<Pki> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(HarnessError::io(format!("mkdir {}", dir.display())))?;
        let pki = Pki { dir };
        let d = |f: &str| pki.dir.join(f);
        write(&d("server.ext"), SERVER_EXT)?;
        write(&d("client.ext"), CLIENT_EXT)?;

        // CA: self-signed.
        openssl(&[
            "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-keyout", p(&d("ca.key")), "-out", p(&d("ca.crt")),
            "-days", "30", "-subj", "/CN=Vigil Test CA", "-extensions", "v3_ca_vigil",
            "-config", p(&pki.openssl_cnf("v3_ca_vigil", CA_EXT)?),
        ])?;
        for (name, cn, ext) in [("server", "localhost", "server.ext"), ("client", CLIENT_CN, "client.ext")] {
            let key = d(&format!("{name}.key"));
            let csr = d(&format!("{name}.csr"));
            let crt = d(&format!("{name}.crt"));
            openssl(&[
                "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-keyout", p(&key), "-out", p(&csr),
                "-subj", &format!("/CN={cn}"),
            ])?;
            openssl(&[
                "x509", "-req", "-in", p(&csr), "-CA", p(&d("ca.crt")), "-CAkey", p(&d("ca.key")),
                "-CAcreateserial", "-out", p(&crt), "-days", "30", "-sha256", "-extfile",
                p(&d(ext)),
            ])?;
        }
        Ok(pki)
    }

    /// A minimal config file holding one extension section (for `req -x509`).
    fn openssl_cnf(&self, section: &str, body: &str) -> Result<PathBuf> {
        let path = self.dir.join("openssl-ca.cnf");
        write(
            &path,
            &format!("[req]\ndistinguished_name=dn\n[dn]\n[{section}]\n{body}"),
        )?;
        Ok(path)
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// CA certificate (PEM): the trust anchor for both sides.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// CA private key (PEM), e.g. to sign more certificates in a test.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// Server certificate (PEM), SAN `IP:127.0.0.1`, `DNS:localhost`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// Server private key (PEM, PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// Client certificate (PEM), `CN=vigil-agent`, EKU clientAuth.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    /// Client private key (PEM, PKCS#8).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn write(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, body).map_err(HarnessError::io(format!("writing {}", path.display())))
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).output().map_err(|source| {
        HarnessError::MissingProgram { program: "openssl".into(), source }
    })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("openssl {}", args.join(" ")),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}
