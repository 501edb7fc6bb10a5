//! Secondary authorization over `requestMetadata` (XKS §11).
//!
//! Per key store, rules are tried in order; the first rule whose conditions
//! all match decides, otherwise the key store's `default` applies. Key stores
//! without a policy allow everything. GetHealthStatus never reaches this.

use serde::Deserialize;

use keymesh_contracts::glob::glob_match;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    keystore: Vec<KeystorePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystorePolicy {
    uri_path: String,
    #[serde(default = "allow")]
    default: Effect,
    #[serde(default)]
    rules: Vec<Rule>,
}

fn allow() -> Effect {
    Effect::Allow
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    name: String,
    effect: Effect,
    aws_principal_arn: Option<String>,
    kms_operation: Option<String>,
    kms_key_arn: Option<String>,
    kms_via_service: Option<String>,
    aws_source_vpc: Option<String>,
    aws_source_vpce: Option<String>,
    key_id: Option<String>,
    operation: Option<String>,
}

/// What a rule is matched against.
#[derive(Debug, Default)]
pub struct Subject<'a> {
    pub operation: &'a str,
    pub key_id: &'a str,
    pub aws_principal_arn: &'a str,
    pub kms_operation: &'a str,
    pub kms_key_arn: &'a str,
    pub kms_via_service: &'a str,
    pub aws_source_vpc: &'a str,
    pub aws_source_vpce: &'a str,
}

/// A decision and the statement that made it (logged on denial, XKS-75).
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'p> {
    pub effect: Effect,
    pub rule: &'p str,
}

impl Rule {
    fn matches(&self, s: &Subject<'_>) -> bool {
        let cond =
            |pat: &Option<String>, value: &str| pat.as_deref().is_none_or(|p| glob_match(p, value));
        cond(&self.aws_principal_arn, s.aws_principal_arn)
            && cond(&self.kms_operation, s.kms_operation)
            && cond(&self.kms_key_arn, s.kms_key_arn)
            && cond(&self.kms_via_service, s.kms_via_service)
            && cond(&self.aws_source_vpc, s.aws_source_vpc)
            && cond(&self.aws_source_vpce, s.aws_source_vpce)
            && cond(&self.key_id, s.key_id)
            && cond(&self.operation, s.operation)
    }
}

impl PolicyFile {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(bytes)?;
        let file: Self = toml::from_str(text)?;
        let mut seen = std::collections::HashSet::new();
        let dups: Vec<&str> = file
            .keystore
            .iter()
            .filter(|k| !seen.insert(k.uri_path.as_str()))
            .map(|k| k.uri_path.as_str())
            .collect();
        if !dups.is_empty() {
            anyhow::bail!("key stores listed twice: {}", dups.join(", "));
        }
        Ok(file)
    }

    pub fn evaluate(&self, uri_path: &str, subject: &Subject<'_>) -> Decision<'_> {
        let Some(ks) = self.keystore.iter().find(|k| k.uri_path == uri_path) else {
            return Decision {
                effect: Effect::Allow,
                rule: "no policy for this key store",
            };
        };
        ks.rules
            .iter()
            .find(|r| r.matches(subject))
            .map(|r| Decision {
                effect: r.effect,
                rule: &r.name,
            })
            .unwrap_or(Decision {
                effect: ks.default,
                rule: "default",
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POLICY: &str = r#"
        [[keystore]]
        uri_path = "/a/kms/xks/v1"
        default = "deny"
        [[keystore.rules]]
        name = "no-ebs"
        effect = "deny"
        kms_via_service = "ebs"
        [[keystore.rules]]
        name = "our-account"
        effect = "allow"
        aws_principal_arn = "arn:aws:iam::111122223333:*"
    "#;

    #[test]
    fn first_match_decides_then_default() {
        let p = PolicyFile::parse(POLICY.as_bytes()).unwrap();
        let ours = Subject {
            aws_principal_arn: "arn:aws:iam::111122223333:role/x",
            ..Default::default()
        };
        assert_eq!(
            p.evaluate("/a/kms/xks/v1", &ours),
            Decision {
                effect: Effect::Allow,
                rule: "our-account"
            }
        );
        let via_ebs = Subject {
            kms_via_service: "ebs",
            ..ours
        };
        assert_eq!(p.evaluate("/a/kms/xks/v1", &via_ebs).rule, "no-ebs");
        let other = Subject {
            aws_principal_arn: "arn:aws:iam::999:role/x",
            ..Default::default()
        };
        assert_eq!(
            p.evaluate("/a/kms/xks/v1", &other),
            Decision {
                effect: Effect::Deny,
                rule: "default"
            }
        );
        assert_eq!(p.evaluate("/b/kms/xks/v1", &other).effect, Effect::Allow);
    }

    #[test]
    fn unknown_fields_are_config_errors() {
        assert!(PolicyFile::parse(b"[[keystore]]\nuri_path='/x'\nbogus=1").is_err());
    }
}
