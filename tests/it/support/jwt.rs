//! Signing test tokens: the issuer's keys (two RSA fixtures, one P-256 key
//! made per run), their JWKs, and compact JWS. Shared by the tests' issuer
//! and the benchmark program.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};

/// An issuer's signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Rsa1,
    Rsa2,
    Ec,
}

impl Signer {
    pub fn kid(self) -> &'static str {
        match self {
            Signer::Rsa1 => "rsa-1",
            Signer::Rsa2 => "rsa-2",
            Signer::Ec => "ec-1",
        }
    }

    pub fn alg(self) -> &'static str {
        match self {
            Signer::Ec => "ES256",
            _ => "RS256",
        }
    }
}

fn pem_der(path: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(path).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

pub struct Keys {
    rsa1: RsaKeyPair,
    rsa2: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Keys {
    /// The fixtures' RSA keys and a fresh P-256 key.
    pub fn load() -> Self {
        let rng = SystemRandom::new();
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        Self {
            rsa1: RsaKeyPair::from_pkcs8(&pem_der("tests/fixtures/oidc/rsa-1.pem")).unwrap(),
            rsa2: RsaKeyPair::from_pkcs8(&pem_der("tests/fixtures/oidc/rsa-2.pem")).unwrap(),
            ec: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
                .unwrap(),
        }
    }

    fn rsa(&self, signer: Signer) -> &RsaKeyPair {
        if signer == Signer::Rsa1 {
            &self.rsa1
        } else {
            &self.rsa2
        }
    }

    /// The public key of `signer` as a JWK.
    pub fn jwk(&self, signer: Signer) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match signer {
            Signer::Ec => {
                let point = self.ec.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": signer.kid(), "use": "sig", "alg": "ES256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            rsa => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(self.rsa(rsa).public());
                json!({"kty": "RSA", "kid": signer.kid(), "use": "sig", "alg": "RS256",
                       "n": b64(&parts.n), "e": b64(&parts.e)})
            }
        }
    }

    /// `claims` under `header`, signed with `signer`'s key.
    pub fn sign(&self, signer: Signer, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match signer {
            Signer::Ec => self
                .ec
                .sign(&rng, message.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            rsa => {
                let pair = self.rsa(rsa);
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut signature)
                    .unwrap();
                signature
            }
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// `claims` signed by `signer`, under its own `alg` and `kid`.
    pub fn token(&self, signer: Signer, claims: &Value) -> String {
        let header = json!({"alg": signer.alg(), "kid": signer.kid(), "typ": "JWT"});
        self.sign(signer, &header, claims)
    }
}
