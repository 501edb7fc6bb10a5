//! Which HSM object labels belong to whom.
//!
//! One token holds customer XKS keys (labelled by their XKS key id) next to
//! keymesh's own objects: the domain keys that wrap KMS customer master keys,
//! the worker's health-check key, the session objects of unwrapped keys. Every
//! internal label starts with [`RESERVED_PREFIX`], so one prefix test keeps
//! them out of reach of the XKS API (edge and worker both check it), and
//! `keymeshctl key create` refuses to make a customer key that would look
//! internal. Domain keys form their own class ([`WRAPPING_KEY_PREFIX`]): the
//! only labels the KeyVault service accepts as wrapping keys.

/// Prefix of every keymesh-internal object label. Never an XKS key id.
pub const RESERVED_PREFIX: &str = "keymesh-";

/// Prefix of every domain (wrapping) key label, e.g. `keymesh-domain-v1`.
/// Inside the reserved space, so a domain key is never an XKS key.
pub const WRAPPING_KEY_PREFIX: &str = "keymesh-domain-";

/// Whether `label` names (or would name) a keymesh-internal object.
pub fn is_reserved(label: &str) -> bool {
    label.starts_with(RESERVED_PREFIX)
}

/// Whether `label` is in the domain-key class: the reserved prefix, then
/// `domain-`, then at least one more character.
pub fn is_wrapping_key(label: &str) -> bool {
    label.len() > WRAPPING_KEY_PREFIX.len() && label.starts_with(WRAPPING_KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert!(is_reserved("keymesh-domain-v1"));
        assert!(is_reserved("keymesh-health-check"));
        assert!(is_reserved("keymesh-vault-key"));
        assert!(!is_reserved("demo-encrypt-decrypt"));
        assert!(!is_reserved("Keymesh-x"), "labels are case-sensitive");
        assert!(!is_reserved("keymesh"));
        assert!(is_wrapping_key("keymesh-domain-v1"));
        assert!(is_wrapping_key("keymesh-domain-other"));
        assert!(!is_wrapping_key("keymesh-domain-"));
        assert!(!is_wrapping_key("keymesh-health-check"));
        assert!(!is_wrapping_key("customer-key"));
    }
}
