//! The CNI spec versions this plugin speaks and what each one allows.

use crate::error::Error;

/// Every version we accept, oldest first (the `supportedVersions` list of VERSION).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used when the request names none we know.
pub const LATEST: &str = "1.1.0";

/// A supported CNI spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    /// 0.3.0.
    V030,
    /// 0.3.1.
    V031,
    /// 0.4.0.
    V040,
    /// 1.0.0.
    V100,
    /// 1.1.0.
    V110,
}

impl CniVersion {
    /// Parses a supported version string.
    pub fn parse(s: &str) -> Option<CniVersion> {
        Some(match s {
            "0.3.0" => CniVersion::V030,
            "0.3.1" => CniVersion::V031,
            "0.4.0" => CniVersion::V040,
            "1.0.0" => CniVersion::V100,
            "1.1.0" => CniVersion::V110,
            _ => return None,
        })
    }

    /// Parses the request's `cniVersion`, failing with code 1 when absent or unsupported.
    pub fn from_request(v: Option<&str>) -> Result<CniVersion, Error> {
        match v {
            None | Some("") => Err(Error::Version(format!(
                "the network configuration has no cniVersion; netd-cni supports {}",
                SUPPORTED.join(", ")
            ))),
            Some(s) => CniVersion::parse(s).ok_or_else(|| {
                Error::Version(format!(
                    "cniVersion {s} is not supported by netd-cni; it supports {}",
                    SUPPORTED.join(", ")
                ))
            }),
        }
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V030 => "0.3.0",
            CniVersion::V031 => "0.3.1",
            CniVersion::V040 => "0.4.0",
            CniVersion::V100 => "1.0.0",
            CniVersion::V110 => "1.1.0",
        }
    }

    /// Results before 1.0.0 carry `ips[].version`.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V100
    }

    /// Fails with code 1 unless this version has `command`, introduced in `since`.
    pub fn require(self, command: &str, since: CniVersion) -> Result<(), Error> {
        if self < since {
            return Err(Error::Version(format!(
                "{command} needs cniVersion {} or newer, the configuration says {}",
                since.as_str(),
                self.as_str()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_round_trips() {
        for s in SUPPORTED {
            assert_eq!(CniVersion::parse(s).unwrap().as_str(), s);
        }
        assert!(CniVersion::parse("0.2.0").is_none());
        assert!(CniVersion::parse("1.2.0").is_none());
    }

    #[test]
    fn missing_or_unknown_version_is_code_1() {
        assert_eq!(CniVersion::from_request(None).unwrap_err().code(), 1);
        let e = CniVersion::from_request(Some("0.2.0")).unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(e.to_string().contains("0.2.0"), "{e}");
    }

    #[test]
    fn check_needs_040_and_gc_needs_110() {
        assert!(CniVersion::V031.require("CHECK", CniVersion::V040).is_err());
        assert!(CniVersion::V040.require("CHECK", CniVersion::V040).is_ok());
        assert_eq!(
            CniVersion::V100
                .require("GC", CniVersion::V110)
                .unwrap_err()
                .code(),
            1
        );
        assert!(CniVersion::V030.ips_carry_version());
        assert!(CniVersion::V040.ips_carry_version());
        assert!(!CniVersion::V100.ips_carry_version());
    }
}
