//! TLS acceptors, password files and ACLs of each listener: loaded at start, reloaded on
//! demand (SIGHUP). A file that fails to load is reported with every problem and the
//! version in force stays; at start a failure stops the server with the file named.

use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use midge_auth::{Access, Acl, PasswordFile};
use midge_codec::TopicFilter;
use midge_core::{Authorizer, ClientInfo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerConfig, TlsConfig};

/// The security state of one listener.
#[derive(Debug)]
pub(crate) struct ListenerSecurity {
    pub(crate) index: u16,
    pub(crate) config: ListenerConfig,
    tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    acl: RwLock<Option<Arc<Acl>>>,
    /// The device registry, consulted before the password file (`None` for the in-process
    /// listener and without a registry).
    pub(crate) registry: Option<Arc<midge_auth::Registry>>,
}

impl ListenerSecurity {
    /// Load everything the listener needs; every problem is returned.
    pub(crate) fn load(index: u16, config: &ListenerConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let tls = match &config.tls {
            None => None,
            Some(t) => match tls_acceptor(t) {
                Ok(a) => Some(a),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let passwords = match load_passwords(config.auth.password_file.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let acl = match load_acl(config.auth.acl_file.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ListenerSecurity {
            index,
            config: config.clone(),
            tls: RwLock::new(tls),
            passwords: RwLock::new(passwords),
            acl: RwLock::new(acl),
            registry: None,
        })
    }

    /// Re-read the listener's files; each one that fails keeps its old version and is
    /// reported. Returns the problems.
    pub(crate) fn reload(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(t) = &self.config.tls {
            match tls_acceptor(t) {
                Ok(a) => {
                    if let Ok(mut g) = self.tls.write() {
                        *g = Some(a);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if self.config.auth.password_file.is_some() {
            match load_passwords(self.config.auth.password_file.as_deref()) {
                Ok(p) => {
                    if let Ok(mut g) = self.passwords.write() {
                        *g = p;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if self.config.auth.acl_file.is_some() {
            match load_acl(self.config.auth.acl_file.as_deref()) {
                Ok(a) => {
                    if let Ok(mut g) = self.acl.write() {
                        *g = a;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// The TLS acceptor in force (new handshakes use the latest certificates).
    pub(crate) fn tls(&self) -> Option<TlsAcceptor> {
        self.tls
            .read()
            .ok()
            .and_then(|g| g.clone())
            .map(TlsAcceptor::from)
    }

    /// The password file in force.
    pub(crate) fn passwords(&self) -> Option<Arc<PasswordFile>> {
        self.passwords.read().ok().and_then(|g| g.clone())
    }

    fn acl(&self) -> Option<Arc<Acl>> {
        self.acl.read().ok().and_then(|g| g.clone())
    }
}

/// A snapshot of every listener's ACL, for core (listener index = position), behind the
/// device registry when there is one (the registry itself is live: not a snapshot).
pub(crate) fn authorizer(
    listeners: &[Arc<ListenerSecurity>],
    registry: Option<&Arc<midge_auth::Registry>>,
) -> Box<dyn Authorizer> {
    let acls: Vec<Option<Arc<Acl>>> = listeners.iter().map(|l| l.acl()).collect();
    let files: Box<dyn Authorizer> = if acls.iter().all(Option::is_none) {
        Box::new(midge_core::AllowAll)
    } else {
        Box::new(AclAuthorizer { acls })
    };
    match registry {
        Some(r) => Box::new(RegistryAuthorizer {
            registry: r.clone(),
            files,
            listeners: u16::try_from(listeners.len()).unwrap_or(u16::MAX),
        }),
        None => files,
    }
}

/// [`Authorizer`] for the device registry's devices (their policies, live), and the ACL
/// files for every other client. A username the registry does not know costs one lookup
/// (none while the registry is empty); in-process clients (the listener after the
/// configured ones) are never devices.
#[derive(Debug)]
pub(crate) struct RegistryAuthorizer {
    registry: Arc<midge_auth::Registry>,
    files: Box<dyn Authorizer>,
    listeners: u16,
}

impl RegistryAuthorizer {
    fn device(&self, client: &ClientInfo<'_>, topic: &str, access: Access) -> Option<bool> {
        if client.listener >= self.listeners {
            return None;
        }
        self.registry
            .check(client.username, client.client_id, topic, access)
    }
}

impl Authorizer for RegistryAuthorizer {
    fn can_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        self.device(client, topic, Access::Write)
            .unwrap_or_else(|| self.files.can_publish(client, topic))
    }
    fn can_subscribe(&self, client: &ClientInfo<'_>, filter: &TopicFilter) -> bool {
        self.device(client, filter.as_str(), Access::Subscribe)
            .unwrap_or_else(|| self.files.can_subscribe(client, filter))
    }
    fn can_receive(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        match self.device(client, topic, Access::Read) {
            Some(ok) => ok,
            None => !self.files.checks_delivery() || self.files.can_receive(client, topic),
        }
    }
    fn checks_delivery(&self) -> bool {
        self.files.checks_delivery() || !self.registry.is_empty()
    }
}

/// [`Authorizer`] on mosquitto-format ACL files, one per listener (none = allow all,
/// except publishing to `$SYS`).
#[derive(Debug)]
pub(crate) struct AclAuthorizer {
    acls: Vec<Option<Arc<Acl>>>,
}

impl AclAuthorizer {
    fn check(&self, client: &ClientInfo<'_>, topic: &str, access: Access) -> bool {
        let info = midge_auth::ClientInfo {
            username: client.username,
            client_id: client.client_id,
        };
        match self.acls.get(usize::from(client.listener)) {
            Some(Some(acl)) => acl.check(&info, topic, access),
            _ => Acl::empty_allows_all().check(&info, topic, access),
        }
    }
}

impl Authorizer for AclAuthorizer {
    fn can_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        self.check(client, topic, Access::Write)
    }
    fn can_subscribe(&self, client: &ClientInfo<'_>, filter: &TopicFilter) -> bool {
        self.check(client, filter.as_str(), Access::Subscribe)
    }
    fn can_receive(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        self.check(client, topic, Access::Read)
    }
    fn checks_delivery(&self) -> bool {
        true
    }
}

fn load_passwords(path: Option<&Path>) -> Result<Option<Arc<PasswordFile>>, String> {
    let Some(path) = path else { return Ok(None) };
    match PasswordFile::load(path) {
        Ok(p) => Ok(Some(Arc::new(p))),
        Err(e) => Err(format!("password file {}: {e}", path.display())),
    }
}

fn load_acl(path: Option<&Path>) -> Result<Option<Arc<Acl>>, String> {
    let Some(path) = path else { return Ok(None) };
    match Acl::load(path) {
        Ok(a) => Ok(Some(Arc::new(a))),
        Err(e) => Err(format!("ACL file {}: {e}", path.display())),
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open {what} {}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate (BEGIN CERTIFICATE) in {what} {}",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open keyfile {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut io::BufReader::new(file))
        .map_err(|e| format!("cannot read keyfile {}: {e}", path.display()))?
        .ok_or_else(|| format!("no PEM private key in keyfile {}", path.display()))
}

/// Build the TLS acceptor of a listener: TLS 1.2 and 1.3 only (rustls has no older
/// versions), client certificates checked against `ca_file` when given. Version 1
/// certificates (the classic openssl guide's) are served and verified as OpenSSL does
/// ([`crate::classic_cert`]).
pub(crate) fn tls_acceptor(t: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&t.cert_file, "certfile")?;
    let key = read_key(&t.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &t.ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let ca_certs = read_certs(ca, "cafile")?;
            for c in &ca_certs {
                roots.add(c.clone()).map_err(|e| {
                    format!(
                        "cafile {}: a CA certificate rustls cannot use: {e}",
                        ca.display()
                    )
                })?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let v = if t.require_certificate {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v
                .build()
                .map_err(|e| format!("cafile {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(Arc::new(crate::classic_cert::ClientVerifier {
                inner: v,
                roots: ca_certs,
                algs: provider.signature_verification_algorithms,
            }))
        }
        None => builder.with_no_client_auth(),
    };
    let key = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "keyfile {}: a private key rustls cannot use: {e}",
            t.key_file.display()
        )
    })?;
    let parsed = certs
        .first()
        .and_then(|c| crate::classic_cert::parse(c.as_ref()))
        .ok_or_else(|| {
            format!(
                "certfile {}: the first certificate is not a well-formed X.509 certificate",
                t.cert_file.display()
            )
        })?;
    if key.public_key().is_some_and(|k| k.as_ref() != parsed.spki) {
        return Err(format!(
            "keyfile {} does not hold the private key of the certificate in certfile {} \
             (the key belongs to another certificate)",
            t.key_file.display(),
            t.cert_file.display()
        ));
    }
    let certified = rustls::sign::CertifiedKey::new(certs, key);
    let config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    Ok(Arc::new(config))
}

/// The identity of a client certificate: its subject's first common name (CN), else its
/// first DNS, email or URI subject alternative name. A small DER walk (no X.509 crate).
pub(crate) fn cert_identity(der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(der)?; // Certificate SEQUENCE
    let (_, mut tbs, _) = tlv(cert)?; // TBSCertificate SEQUENCE
    let mut fields = Vec::with_capacity(10);
    while !tbs.is_empty() {
        let (tag, content, rest) = tlv(tbs)?;
        fields.push((tag, content));
        tbs = rest;
    }
    // skip the optional [0] version
    let start = usize::from(fields.first()?.0 == 0xA0);
    // serial, signature, issuer, validity, subject
    let subject = fields.get(start + 4)?.1;
    if let Some(cn) = name_cn(subject) {
        return Some(cn);
    }
    let ext = fields.iter().find(|(tag, _)| *tag == 0xA3)?.1;
    san_first(ext)
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1D, 0x11];

fn name_cn(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (_, mut set, rest) = tlv(name)?;
        name = rest;
        while !set.is_empty() {
            let (_, atv, rest) = tlv(set)?;
            set = rest;
            let (oid_tag, oid, value) = tlv(atv)?;
            if oid_tag == 0x06 && oid == OID_CN {
                let (vtag, v, _) = tlv(value)?;
                // UTF8String, PrintableString, T61String, IA5String
                if matches!(vtag, 0x0C | 0x13 | 0x14 | 0x16) {
                    return std::str::from_utf8(v).ok().map(str::to_owned);
                }
            }
        }
    }
    None
}

fn san_first(ext: &[u8]) -> Option<String> {
    let (_, mut list, _) = tlv(ext)?; // SEQUENCE OF Extension
    while !list.is_empty() {
        let (_, e, rest) = tlv(list)?;
        list = rest;
        let (_, oid, mut body) = tlv(e)?;
        if oid != OID_SAN {
            continue;
        }
        // optional critical BOOLEAN, then OCTET STRING
        let (mut tag, mut value, rest) = tlv(body)?;
        if tag == 0x01 {
            body = rest;
            (tag, value, _) = tlv(body)?;
        }
        if tag != 0x04 {
            return None;
        }
        let (_, mut names, _) = tlv(value)?;
        while !names.is_empty() {
            let (tag, v, rest) = tlv(names)?;
            names = rest;
            // rfc822Name [1], dNSName [2], uniformResourceIdentifier [6]
            if matches!(tag, 0x81 | 0x82 | 0x86) {
                return std::str::from_utf8(v).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// One DER TLV: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
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
    let content = input.get(header..header.checked_add(len)?)?;
    let rest = input.get(header + len..)?;
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_refuses_truncated_input() {
        assert!(tlv(&[0x30, 0x05, 1, 2]).is_none());
        assert!(tlv(&[0x30, 0x82, 0x01]).is_none());
        assert_eq!(
            tlv(&[0x04, 0x01, 7, 9]),
            Some((0x04, &[7u8][..], &[9u8][..]))
        );
    }

    #[test]
    fn garbage_has_no_identity() {
        assert_eq!(cert_identity(&[]), None);
        assert_eq!(cert_identity(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }
}
