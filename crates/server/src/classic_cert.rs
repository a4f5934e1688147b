//! Certificates made by the classic single-CA openssl guide that mosquitto users follow
//! (`openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial ...` with no
//! extension file): X.509 **v1** certificates, without extensions. webpki (and so rustls)
//! refuses every v1 end-entity certificate (`UnsupportedCertVersion`); OpenSSL, and so
//! mosquitto, accepts them. midge accepts them the way OpenSSL does:
//!
//! - a v1 **server** certificate is served as it is; its key is checked against the
//!   certificate's public key here (rustls' own check parses the certificate with webpki);
//! - a v1 **client** certificate is verified here: issued directly by a certificate of the
//!   listener's `cafile` (issuer name equal to the CA's subject, the CA's signature valid),
//!   both within their validity period; the handshake signature is checked with the
//!   certificate's public key. Version 3 certificates keep webpki's strict path unchanged.
//!
//! The DER walk is small and bounded: a peer's bytes can never panic it.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// The parts of a certificate that verification needs, as slices of its DER.
#[derive(Debug)]
pub(crate) struct Cert<'a> {
    /// Whether the version field is absent (v1).
    pub(crate) v1: bool,
    /// The whole `tbsCertificate` TLV (what the issuer signed).
    tbs: &'a [u8],
    /// Content of the outer `signatureAlgorithm` AlgorithmIdentifier.
    sig_alg: &'a [u8],
    /// The signature bits.
    signature: &'a [u8],
    /// The issuer Name TLV.
    issuer: &'a [u8],
    /// The subject Name TLV.
    subject: &'a [u8],
    /// notBefore / notAfter as Unix seconds.
    not_before: i64,
    not_after: i64,
    /// The whole SubjectPublicKeyInfo TLV.
    pub(crate) spki: &'a [u8],
    /// Content of the SPKI's AlgorithmIdentifier.
    spki_alg: &'a [u8],
    /// The subjectPublicKey bits.
    public_key: &'a [u8],
}

/// One DER TLV: (tag, content, whole TLV, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// Splits the first DER TLV off `input`.
fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let content = input.get(header..end)?;
    let whole = input.get(..end)?;
    let rest = input.get(end..)?;
    Some((tag, content, whole, rest))
}

/// The bits of a BIT STRING whose unused-bit count is 0.
fn bit_string(content: &[u8]) -> Option<&[u8]> {
    match content.split_first() {
        Some((0, bits)) => Some(bits),
        _ => None,
    }
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(tag: u8, content: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(content).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| rest.get(r).and_then(|v| v.parse::<i64>().ok());
    let (mo, d, h, mi, se) = (n(0..2)?, n(2..4)?, n(4..6)?, n(6..8)?, n(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Parses the fields of a certificate; `None` when it is not a well-formed X.509
/// certificate.
pub(crate) fn parse(der: &[u8]) -> Option<Cert<'_>> {
    let (0x30, cert, _, _) = tlv(der)? else {
        return None;
    };
    let (0x30, tbs_content, tbs, rest) = tlv(cert)? else {
        return None;
    };
    let (0x30, sig_alg, _, rest) = tlv(rest)? else {
        return None;
    };
    let (0x03, sig, _, _) = tlv(rest)? else {
        return None;
    };
    let signature = bit_string(sig)?;
    let mut fields = tbs_content;
    let mut v1 = true;
    if fields.first() == Some(&0xA0) {
        let (_, version, _, rest) = tlv(fields)?;
        // [0] EXPLICIT INTEGER: 0 = v1, 1 = v2, 2 = v3
        let (0x02, v, _, _) = tlv(version)? else {
            return None;
        };
        v1 = v == [0];
        fields = rest;
    }
    let (0x02, _serial, _, rest) = tlv(fields)? else {
        return None;
    };
    let (0x30, _inner_sig, _, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, _, issuer, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, validity, _, rest) = tlv(rest)? else {
        return None;
    };
    let (t1, nb, _, vrest) = tlv(validity)?;
    let (t2, na, _, _) = tlv(vrest)?;
    let (0x30, _, subject, rest) = tlv(rest)? else {
        return None;
    };
    let (0x30, spki_content, spki, _) = tlv(rest)? else {
        return None;
    };
    let (0x30, spki_alg, _, pk_rest) = tlv(spki_content)? else {
        return None;
    };
    let (0x03, pk, _, _) = tlv(pk_rest)? else {
        return None;
    };
    Some(Cert {
        v1,
        tbs,
        sig_alg,
        signature,
        issuer,
        subject,
        not_before: time(t1, nb)?,
        not_after: time(t2, na)?,
        spki,
        spki_alg,
        public_key: bit_string(pk)?,
    })
}

/// Whether `der` is a version 1 certificate (the ones webpki refuses).
pub(crate) fn is_v1(der: &[u8]) -> bool {
    parse(der).is_some_and(|c| c.v1)
}

fn bad(e: CertificateError) -> Error {
    Error::InvalidCertificate(e)
}

/// Checks that `issuer` signed `cert`, with one of `algs`.
fn signed_by(cert: &Cert<'_>, issuer: &Cert<'_>, algs: &WebPkiSupportedAlgorithms) -> bool {
    algs.all.iter().any(|alg| {
        alg.signature_alg_id().as_ref() == cert.sig_alg
            && alg.public_key_alg_id().as_ref() == issuer.spki_alg
            && alg
                .verify_signature(issuer.public_key, cert.tbs, cert.signature)
                .is_ok()
    })
}

fn within(cert: &Cert<'_>, now: i64) -> Result<(), Error> {
    if now < cert.not_before {
        return Err(bad(CertificateError::NotValidYet));
    }
    if now > cert.not_after {
        return Err(bad(CertificateError::Expired));
    }
    Ok(())
}

/// Verifies a v1 end-entity certificate issued directly by one of `roots`, as OpenSSL does
/// for the classic guide's certificates.
pub(crate) fn verify_v1(
    end_entity: &[u8],
    roots: &[CertificateDer<'static>],
    now: UnixTime,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<(), Error> {
    let cert = parse(end_entity).ok_or(bad(CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    within(&cert, now)?;
    let mut issuer_found = false;
    for root in roots {
        let Some(ca) = parse(root) else { continue };
        if ca.subject != cert.issuer {
            continue;
        }
        issuer_found = true;
        if signed_by(&cert, &ca, algs) {
            return within(&ca, now);
        }
    }
    Err(bad(if issuer_found {
        CertificateError::BadSignature
    } else {
        CertificateError::UnknownIssuer
    }))
}

/// Verifies a handshake signature with the public key of a (v1) certificate.
fn verify_handshake(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    let c = parse(cert.as_ref()).ok_or(bad(CertificateError::BadEncoding))?;
    let candidates = algs
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, a)| *a)
        .ok_or(Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ))?;
    let ok = candidates.iter().any(|alg| {
        alg.public_key_alg_id().as_ref() == c.spki_alg
            && alg
                .verify_signature(c.public_key, message, dss.signature())
                .is_ok()
    });
    if ok {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(bad(CertificateError::BadSignature))
    }
}

/// The client-certificate verifier of a listener with a `cafile`: webpki's for modern
/// certificates, the checks above for v1 ones.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) roots: Vec<CertificateDer<'static>>,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if is_v1(end_entity.as_ref()) {
            verify_v1(end_entity.as_ref(), &self.roots, now, &self.algs)
                .map(|()| ClientCertVerified::assertion())
        } else {
            self.inner
                .verify_client_cert(end_entity, intermediates, now)
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if is_v1(cert.as_ref()) {
            verify_handshake(message, cert, dss, &self.algs)
        } else {
            self.inner.verify_tls12_signature(message, cert, dss)
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if is_v1(cert.as_ref()) {
            let c = parse(cert.as_ref()).ok_or(bad(CertificateError::BadEncoding))?;
            rustls::crypto::verify_tls13_signature_with_raw_key(
                message,
                &SubjectPublicKeyInfoDer::from(c.spki),
                dss,
                &self.algs,
            )
        } else {
            self.inner.verify_tls13_signature(message, cert, dss)
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(parse(&[]).is_none());
        assert!(parse(&[0x30, 0x03, 0x30, 0x01, 0x02]).is_none());
        assert!(!is_v1(&[0x30, 0x82, 0xFF]));
    }

    #[test]
    fn asn1_times_become_unix_seconds() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(0x18, b"20380119031408Z"), Some(2_147_483_648));
        assert_eq!(time(0x17, b"700101000000"), None);
        assert_eq!(time(0x17, b"701301000000Z"), None);
        assert_eq!(time(0x04, b"700101000000Z"), None);
    }
}
