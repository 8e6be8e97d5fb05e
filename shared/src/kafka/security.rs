//! The librdkafka properties of TLS and SASL, checked before any client is made.

use crate::error::{bail, Result};

use crate::config::Kafka;

/// The librdkafka properties for TLS and SASL. Certificates are verified (chain and host name,
/// librdkafka's defaults) against the CA file, or the system's CAs without one.
pub fn security_properties(kafka: &Kafka) -> Result<Vec<(&'static str, String)>> {
    let protocol = kafka.security_protocol.to_ascii_lowercase();
    let mut props = vec![("security.protocol", protocol.clone())];
    if protocol.starts_with("sasl_") {
        let (Some(mechanism), Some(username), Some(password)) = (
            &kafka.sasl_mechanism,
            &kafka.sasl_username,
            &kafka.sasl_password,
        ) else {
            bail!(
                "Kafka security protocol {protocol} needs a SASL mechanism, user name and \
                 password (DWH_KAFKA_SASL_MECHANISM, DWH_KAFKA_SASL_USERNAME, \
                 DWH_KAFKA_SASL_PASSWORD)"
            );
        };
        props.push(("sasl.mechanism", mechanism.to_ascii_uppercase()));
        props.push(("sasl.username", username.clone()));
        props.push(("sasl.password", password.clone()));
    } else if kafka.sasl_mechanism.is_some() || kafka.sasl_username.is_some() {
        bail!(
            "Kafka SASL settings need security protocol sasl_ssl or sasl_plaintext, not {protocol}"
        );
    }
    if let Some(ca) = &kafka.ca_file {
        if !protocol.ends_with("ssl") {
            bail!("a Kafka CA file needs security protocol ssl or sasl_ssl, not {protocol}");
        }
        props.push(("ssl.ca.location", ca.display().to_string()));
    }
    if protocol.ends_with("ssl") {
        props.push(("enable.ssl.certificate.verification", "true".to_owned()));
        props.push(("ssl.endpoint.identification.algorithm", "https".to_owned()));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::producer;

    fn settings(protocol: &str) -> Kafka {
        Kafka {
            brokers: "127.0.0.1:1".to_owned(),
            security_protocol: protocol.to_owned(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ca_file: None,
        }
    }

    /// A self-signed CA certificate in PEM, written to a temp file librdkafka can load.
    fn ca_file() -> std::path::PathBuf {
        use openssl::{asn1::Asn1Time, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
        let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "dwh test CA").unwrap();
        let name = name.build();
        let mut cert = x509::X509Builder::new().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let path = std::env::temp_dir().join(format!("dwh-kafka-ca-{}.pem", std::process::id()));
        std::fs::write(&path, cert.build().to_pem().unwrap()).unwrap();
        path
    }

    #[test]
    fn plaintext_sets_only_the_protocol() {
        let props = security_properties(&settings("plaintext")).unwrap();
        assert_eq!(props, vec![("security.protocol", "plaintext".to_owned())]);
    }

    #[test]
    fn sasl_ssl_with_scram_and_a_ca_sets_what_librdkafka_needs_and_it_accepts_them() {
        let ca = ca_file();
        let mut kafka = settings("SASL_SSL");
        kafka.sasl_mechanism = Some("scram-sha-512".to_owned());
        kafka.sasl_username = Some("dwh".to_owned());
        kafka.sasl_password = Some("s3cret".to_owned());
        kafka.ca_file = Some(ca.clone());
        let props = security_properties(&kafka).unwrap();
        let expected = [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "dwh"),
            ("sasl.password", "s3cret"),
            ("ssl.ca.location", ca.to_str().unwrap()),
            ("enable.ssl.certificate.verification", "true"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ];
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(k, v)| (*k, v.to_string())).collect();
        assert_eq!(props, expected);
        // librdkafka checks the properties (and loads the CA) when the client is created: this
        // fails when it was built without OpenSSL or SASL SCRAM.
        let _producer =
            producer(&kafka).expect("librdkafka accepts SASL_SSL with SCRAM-SHA-512 and a CA");
        kafka.ca_file = Some(ca.with_extension("missing"));
        let error = producer(&kafka).err().expect("a missing CA file fails");
        assert!(
            crate::chain_line(&error).contains("ssl.ca.location"),
            "{}",
            crate::chain_line(&error)
        );
        std::fs::remove_file(ca).unwrap();
    }

    #[test]
    fn incomplete_or_contradictory_settings_are_refused() {
        let mut kafka = settings("sasl_ssl");
        kafka.sasl_mechanism = Some("PLAIN".to_owned());
        let error = security_properties(&kafka).unwrap_err().to_string();
        assert!(error.contains("DWH_KAFKA_SASL_PASSWORD"), "{error}");
        let mut kafka = settings("plaintext");
        kafka.sasl_username = Some("dwh".to_owned());
        assert!(security_properties(&kafka).is_err());
        let mut kafka = settings("sasl_plaintext");
        kafka.ca_file = Some("/ca.pem".into());
        assert!(security_properties(&kafka).is_err());
    }
}
