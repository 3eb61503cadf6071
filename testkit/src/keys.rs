//! Key material for tests, made with the `openssl` command line: a CA with a certificate
//! for `localhost`, an APNs-style P-256 key and a service-account-style RSA key.

use std::path::Path;
use std::process::{Command, Stdio};

fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a certificate for `localhost` signed by it, as PEM files in `dir`: (ca, cert,
/// key).
pub fn test_certificates(dir: &Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Herald test CA",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &path("relay.key"),
        "-out",
        &path("relay.csr"),
    ]);
    std::fs::write(
        dir.join("relay.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("relay.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path("relay.ext"),
        "-out",
        &path("relay.pem"),
    ]);
    (path("ca.pem"), path("relay.pem"), path("relay.key"))
}

/// A P-256 key as an APNs `.p8` file holds it (PKCS#8 PEM), and its public point (the 65
/// bytes of an uncompressed point) to check signatures with.
pub fn p256_key(dir: &Path) -> (String, Vec<u8>) {
    let key = dir.join("apns.p8").display().to_string();
    let public = dir.join("apns.pub.der").display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &key,
    ]);
    openssl(&[
        "pkey", "-in", &key, "-pubout", "-outform", "DER", "-out", &public,
    ]);
    let spki = std::fs::read(&public).unwrap();
    let point = spki[spki.len() - 65..].to_vec();
    (std::fs::read_to_string(&key).unwrap(), point)
}

/// An RSA key as a service account holds it (PKCS#8 PEM), and its public key (PKCS#1
/// DER) to check signatures with.
pub fn rsa_key(dir: &Path) -> (String, Vec<u8>) {
    let key = dir.join("sa.pem").display().to_string();
    let public = dir.join("sa.pub.der").display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &key,
    ]);
    openssl(&[
        "rsa",
        "-in",
        &key,
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        &public,
    ]);
    (
        std::fs::read_to_string(&key).unwrap(),
        std::fs::read(&public).unwrap(),
    )
}
