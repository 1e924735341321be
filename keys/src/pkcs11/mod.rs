//! Keys on PKCS#11 tokens (HSMs, YubiKeys, SoftHSM2) named by RFC 7512
//! URIs. The module is loaded with `dlopen` when a `pkcs11:` key is used,
//! so imgate links against no HSM library.
//!
//! Signing hashes locally and asks the token for raw `CKM_ECDSA` over the
//! SHA-256 digest: every token with P-256 keys offers it (SoftHSM2 offers
//! nothing else for EC), and the result is the same signature
//! `CKM_ECDSA_SHA256` would give. The private key never leaves the token.
//!
//! The PIN comes from the URI (`pin-value`, `pin-source`) or from the
//! caller (environment, prompt). A login is attempted exactly once: a retry
//! with the same wrong PIN would only burn the token's retry counter.

pub mod uri;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{KeyError, Pkcs11Error};
use crate::public::PublicKey;
use crate::signer::{finish_remote_signature, Signer};
pub use uri::Pkcs11Uri;

/// DER of the prime256v1 OID, the `CKA_EC_PARAMS` of a P-256 key.
const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Length of an uncompressed P-256 point (0x04 || X || Y).
const P256_POINT_LEN: usize = 65;
/// A PIN file holds a PIN; anything larger is the wrong file.
const MAX_PIN_FILE_LEN: u64 = 1024;

/// Supplies the PIN when the URI carries none. Called at most once, with
/// the token's label, and only when the token requires a login.
pub type PinCallback<'a> = &'a mut dyn FnMut(&str) -> Result<Zeroizing<String>, KeyError>;

/// A P-256 private key on a PKCS#11 token, logged in and ready to sign.
pub struct Pkcs11Signer {
    /// `Session` is `Send` but not `Sync`; signing takes the lock. The
    /// session keeps the module loaded and finalises it when dropped.
    session: Mutex<Session>,
    key: ObjectHandle,
    public: PublicKey,
    name: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("key", &self.name)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Loads the module, finds the token and the key the URI names, logs in
    /// and reads the public key. `default_module` is used when the URI has
    /// no `module-path` (the caller reads it from the environment).
    ///
    /// ```no_run
    /// let signer = imgate_keys::pkcs11::Pkcs11Signer::open(
    ///     "pkcs11:token=ci;object=release?pin-source=/run/secrets/pin",
    ///     Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so")),
    ///     &mut |_| Err(imgate_keys::KeyError::BadSignature),
    /// ).unwrap();
    /// ```
    pub fn open(
        uri_text: &str,
        default_module: Option<&Path>,
        pin: PinCallback<'_>,
    ) -> Result<Pkcs11Signer, KeyError> {
        let uri = Pkcs11Uri::parse(uri_text)?;
        let token = Token::open(&uri, default_module)?;
        token.login(&uri, pin)?;
        let key = token.find_one(&uri, ObjectClass::PRIVATE_KEY, "private key")?;
        token.require_p256(key)?;
        let public = token.public_key_of(&uri, key)?;
        let mechanisms = token
            .ctx
            .get_mechanism_list(token.slot)
            .map_err(|e| token.failure("C_GetMechanismList", &e))?;
        if !mechanisms.contains(&MechanismType::ECDSA) {
            return Err(
                token.failure_text("signing", "the token does not offer CKM_ECDSA".to_string())
            );
        }
        Ok(Pkcs11Signer {
            session: Mutex::new(token.session),
            key,
            public,
            name: uri.display_name().to_string(),
        })
    }
}

impl Signer for Pkcs11Signer {
    fn name(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    fn sign_message(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let digest = Sha256::digest(msg);
        let session = self.session.lock().map_err(|_| {
            KeyError::from(Pkcs11Error::Failed {
                key: self.name.clone(),
                operation: "signing".to_string(),
                detail: "an earlier signing attempt panicked".to_string(),
            })
        })?;
        let raw = session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|e| {
                KeyError::from(Pkcs11Error::Failed {
                    key: self.name.clone(),
                    operation: "C_Sign".to_string(),
                    detail: describe(&e),
                })
            })?;
        finish_remote_signature(&self.public, msg, &raw)
    }
}

/// The public key of the key pair the URI names. Public key objects are
/// usually readable without a login, so the PIN is asked for only when the
/// token hides them.
pub fn public_key(
    uri_text: &str,
    default_module: Option<&Path>,
    pin: PinCallback<'_>,
) -> Result<PublicKey, KeyError> {
    let uri = Pkcs11Uri::parse(uri_text)?;
    let token = Token::open(&uri, default_module)?;
    match token.find_one(&uri, ObjectClass::PUBLIC_KEY, "public key") {
        Ok(handle) => token.read_point(&uri, handle),
        Err(KeyError::Pkcs11(err))
            if token.login_required && matches!(*err, Pkcs11Error::ObjectNotFound { .. }) =>
        {
            token.login(&uri, pin)?;
            let key = token.find_one(&uri, ObjectClass::PRIVATE_KEY, "private key")?;
            token.require_p256(key)?;
            token.public_key_of(&uri, key)
        }
        Err(err) => Err(err),
    }
}

/// An open session on the one token the URI selects.
struct Token {
    ctx: Pkcs11,
    slot: Slot,
    session: Session,
    label: String,
    login_required: bool,
    name: String,
}

impl Token {
    fn open(uri: &Pkcs11Uri, default_module: Option<&Path>) -> Result<Token, KeyError> {
        let name = uri.display_name().to_string();
        let module: PathBuf = uri
            .module_path
            .clone()
            .or_else(|| default_module.map(Path::to_path_buf))
            .ok_or_else(|| KeyError::from(Pkcs11Error::NoModule { key: name.clone() }))?;
        let module_error = |detail: String| {
            KeyError::from(Pkcs11Error::Module {
                module: module.display().to_string(),
                detail,
            })
        };
        if !module.is_file() {
            return Err(module_error("no such file".to_string()));
        }
        let ctx = Pkcs11::new(&module).map_err(|e| module_error(describe(&e)))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| module_error(format!("C_Initialize: {}", describe(&e))))?;

        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| module_error(format!("C_GetSlotList: {}", describe(&e))))?;
        let mut present = Vec::new();
        let mut matching = Vec::new();
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            if !info.token_initialized() {
                continue;
            }
            let label = info.label().trim_end().to_string();
            present.push(format!("{label:?} in slot {}", slot.id()));
            let wanted = |want: &Option<String>, have: &str| {
                want.as_deref().is_none_or(|w| w == have.trim_end())
            };
            if uri.slot_id.is_none_or(|id| id == slot.id())
                && wanted(&uri.token, &label)
                && wanted(&uri.serial, info.serial_number())
                && wanted(&uri.manufacturer, info.manufacturer_id())
                && wanted(&uri.model, info.model())
            {
                matching.push((slot, label, info.login_required()));
            }
        }
        let (slot, label, login_required) = match matching.len() {
            1 => matching.remove(0),
            0 => {
                return Err(KeyError::from(Pkcs11Error::TokenNotFound {
                    key: name,
                    present: if present.is_empty() {
                        "none".to_string()
                    } else {
                        present.join(", ")
                    },
                }))
            }
            n => {
                return Err(KeyError::from(Pkcs11Error::TokenNotFound {
                    key: name,
                    present: format!(
                        "{n} tokens match ({}); name one with token= or slot-id=",
                        present.join(", ")
                    ),
                }))
            }
        };
        let session = ctx.open_ro_session(slot).map_err(|e| {
            KeyError::from(Pkcs11Error::Failed {
                key: name.clone(),
                operation: "C_OpenSession".to_string(),
                detail: describe(&e),
            })
        })?;
        Ok(Token {
            ctx,
            slot,
            session,
            label,
            login_required,
            name,
        })
    }

    /// Logs in once, if the token wants a login at all.
    fn login(&self, uri: &Pkcs11Uri, pin: PinCallback<'_>) -> Result<(), KeyError> {
        if !self.login_required {
            return Ok(());
        }
        let pin = match (&uri.pin_value, &uri.pin_source) {
            (Some(value), _) => value.clone(),
            (None, Some(path)) => read_pin_file(path, &self.name)?,
            (None, None) => pin(&self.label)?,
        };
        let auth = AuthPin::from(pin.as_str().to_owned());
        match self.session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                Err(KeyError::from(Pkcs11Error::WrongPin {
                    key: self.name.clone(),
                    token: self.label.clone(),
                }))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                Err(KeyError::from(Pkcs11Error::PinLocked {
                    key: self.name.clone(),
                    token: self.label.clone(),
                }))
            }
            Err(e) => Err(self.failure("C_Login", &e)),
        }
    }

    /// The one object of `class` the URI's `object`/`id` select.
    fn find_one(
        &self,
        uri: &Pkcs11Uri,
        class: ObjectClass,
        what: &str,
    ) -> Result<ObjectHandle, KeyError> {
        let mut template = vec![Attribute::Class(class)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = self
            .session
            .find_objects(&template)
            .map_err(|e| self.failure("C_FindObjects", &e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(self.not_found(format!("no {what} {}", selector(uri)))),
            many => Err(self.not_found(format!(
                "{} {what}s match {}; name one with object= or id=",
                many.len(),
                selector(uri)
            ))),
        }
    }

    fn not_found(&self, detail: String) -> KeyError {
        KeyError::from(Pkcs11Error::ObjectNotFound {
            key: self.name.clone(),
            token: self.label.clone(),
            detail,
        })
    }

    /// Refuses anything but an EC key on P-256.
    fn require_p256(&self, key: ObjectHandle) -> Result<(), KeyError> {
        let attrs = self
            .session
            .get_attributes(key, &[AttributeType::KeyType, AttributeType::EcParams])
            .map_err(|e| self.failure("C_GetAttributeValue", &e))?;
        let mut key_type = None;
        let mut params = None;
        for attr in attrs {
            match attr {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                _ => {}
            }
        }
        let unsupported = |detail: String| KeyError::UnsupportedKey {
            key: self.name.clone(),
            detail,
        };
        match key_type {
            Some(t) if t == KeyType::EC => {}
            Some(t) => {
                return Err(unsupported(format!(
                    "a key of type {} on the token; imgate signs with ECDSA P-256 keys",
                    t.to_string().trim_start_matches("CKK_")
                )))
            }
            None => {
                return Err(unsupported(
                    "the token does not say the key's type".to_string(),
                ))
            }
        }
        if params.as_deref() != Some(&P256_EC_PARAMS[..]) {
            return Err(unsupported(
                "an EC key on another curve than P-256; imgate signs with ECDSA P-256 keys"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// The public key paired with `private`: the public key object with the
    /// same `CKA_ID` (or, without an ID, the same label).
    fn public_key_of(&self, uri: &Pkcs11Uri, private: ObjectHandle) -> Result<PublicKey, KeyError> {
        let attrs = self
            .session
            .get_attributes(private, &[AttributeType::Id, AttributeType::Label])
            .map_err(|e| self.failure("C_GetAttributeValue", &e))?;
        let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
        for attr in attrs {
            match attr {
                Attribute::Id(id) if !id.is_empty() => template.push(Attribute::Id(id)),
                Attribute::Label(label) if !label.is_empty() && uri.id.is_none() => {
                    template.push(Attribute::Label(label))
                }
                _ => {}
            }
        }
        let found = self
            .session
            .find_objects(&template)
            .map_err(|e| self.failure("C_FindObjects", &e))?;
        match found.as_slice() {
            [one] => self.read_point(uri, *one),
            [] => Err(self.not_found(format!(
                "no public key object next to the private key {}",
                selector(uri)
            ))),
            _ => Err(self.not_found(format!(
                "several public key objects pair with the private key {}",
                selector(uri)
            ))),
        }
    }

    /// Reads `CKA_EC_POINT` (a DER OCTET STRING around the point, or the
    /// bare point as some modules return it).
    fn read_point(&self, uri: &Pkcs11Uri, public: ObjectHandle) -> Result<PublicKey, KeyError> {
        self.require_p256(public)?;
        let attrs = self
            .session
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(|e| self.failure("C_GetAttributeValue", &e))?;
        let point = attrs
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            })
            .ok_or_else(|| {
                self.not_found(format!(
                    "no CKA_EC_POINT on the public key {}",
                    selector(uri)
                ))
            })?;
        let bare = match point.as_slice() {
            [0x04, len, rest @ ..]
                if usize::from(*len) == P256_POINT_LEN && rest.len() == P256_POINT_LEN =>
            {
                rest
            }
            other => other,
        };
        let key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(bare).map_err(|e| KeyError::Malformed {
                key: self.name.clone(),
                detail: format!("the token's public key is not a P-256 point: {e}"),
            })?;
        Ok(PublicKey::from_verifying_key(key, self.name.clone()))
    }

    fn failure(&self, operation: &str, err: &CkError) -> KeyError {
        self.failure_text(operation, describe(err))
    }

    fn failure_text(&self, operation: &str, detail: String) -> KeyError {
        KeyError::from(Pkcs11Error::Failed {
            key: self.name.clone(),
            operation: operation.to_string(),
            detail,
        })
    }
}

/// "object=\"release\" id=01", for messages.
fn selector(uri: &Pkcs11Uri) -> String {
    let mut parts = Vec::new();
    if let Some(label) = &uri.object {
        parts.push(format!("object={label:?}"));
    }
    if let Some(id) = &uri.id {
        parts.push(format!("id={}", hex::encode(id)));
    }
    if parts.is_empty() {
        "(the URI names no object or id)".to_string()
    } else {
        parts.join(" ")
    }
}

/// A PKCS#11 error in one line: the return value's name, not cryptoki's
/// paragraph-long description of it.
fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        CkError::LibraryLoading(e) => e.to_string(),
        other => other.to_string(),
    }
}

fn read_pin_file(path: &Path, key: &str) -> Result<Zeroizing<String>, KeyError> {
    use std::io::Read as _;
    let pin_error = |source| {
        KeyError::from(Pkcs11Error::PinFile {
            key: key.to_string(),
            path: path.display().to_string(),
            source,
        })
    };
    let file = std::fs::File::open(path).map_err(pin_error)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_PIN_FILE_LEN as usize + 1));
    file.take(MAX_PIN_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(pin_error)?;
    if bytes.len() as u64 > MAX_PIN_FILE_LEN {
        return Err(pin_error(std::io::Error::other(format!(
            "larger than {MAX_PIN_FILE_LEN} bytes; not a PIN file"
        ))));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| pin_error(std::io::Error::other("not UTF-8")))?;
    Ok(Zeroizing::new(
        text.trim_end_matches(['\r', '\n']).to_string(),
    ))
}
