//! A rough, in-process look at RSA private-key timing (docs/THREAT-MODEL.md, "KMS:
//! RSA private-key operations"): median times of AsymmetricRsaDecrypt-style
//! decryptions of conforming and non-conforming ciphertexts. It prints and asserts
//! nothing about time (a shared 2-core VM is no place for timed assertions); it
//! does assert that PKCS#1 v1.5 never errors and OAEP errors are all alike.
//!
//! Run: `cargo test -p kms-core --test rsa_timing -- --ignored --nocapture`
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use kms_core::asym::{RsaEncryption, RsaKey};
use rsa::pkcs8::DecodePublicKey as _;

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
fn pkcs1v15_and_oaep_decryption_timing() {
    let key = RsaKey::generate().unwrap();
    let public = rsa::PublicKey::from_public_key_der(&key.public_key_der().unwrap()).unwrap();
    let mut rng = kms_core_rng();
    let good_pkcs = public
        .pkcs1v15_encrypt_with_rng(&mut rng, &[7u8; 32])
        .unwrap();
    let good_oaep = public
        .oaep_encrypt_with_rng::<sha2::Sha256, _>(&mut rng, &[7u8; 32])
        .unwrap();
    // Non-conforming for PKCS#1 v1.5: an OAEP ciphertext; for OAEP: a PKCS#1 one.
    let cases: [(&str, RsaEncryption, &[u8]); 4] = [
        ("pkcs1 conforming", RsaEncryption::Pkcs1V15, &good_pkcs),
        ("pkcs1 non-conforming", RsaEncryption::Pkcs1V15, &good_oaep),
        ("oaep conforming", RsaEncryption::OaepSha256, &good_oaep),
        ("oaep non-conforming", RsaEncryption::OaepSha256, &good_pkcs),
    ];
    const N: usize = 200;
    let mut samples: Vec<Vec<u128>> = vec![Vec::with_capacity(N); cases.len()];
    for _ in 0..N {
        // Interleaved, so drift in machine load hits every case alike.
        for (i, (_, alg, ct)) in cases.iter().enumerate() {
            let t = Instant::now();
            let r = key.decrypt(*alg, ct);
            samples[i].push(t.elapsed().as_nanos());
            match (i, r) {
                (0, Ok(pt)) => assert_eq!(&pt[..], &[7u8; 32]),
                (1, Ok(pt)) => assert_ne!(&pt[..], &[7u8; 32]),
                (2, Ok(pt)) => assert_eq!(&pt[..], &[7u8; 32]),
                (3, Err(_)) => {}
                (i, r) => panic!("case {i}: unexpected {:?}", r.map(|_| ())),
            }
        }
    }
    for ((name, _, _), s) in cases.iter().zip(samples) {
        println!("{name:<22} median {:>8} µs", median(s) / 1000);
    }
}

/// The system RNG as a rand_core RNG (the test's own, for encryption).
fn kms_core_rng() -> impl rsa::rand_core::TryCryptoRng {
    struct R;
    impl rsa::rand_core::TryRng for R {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            let mut b = [0u8; 4];
            self.try_fill_bytes(&mut b)?;
            Ok(u32::from_le_bytes(b))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            let mut b = [0u8; 8];
            self.try_fill_bytes(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            kms_core::crypto::random_bytes(dst).unwrap();
            Ok(())
        }
    }
    impl rsa::rand_core::TryCryptoRng for R {}
    R
}
