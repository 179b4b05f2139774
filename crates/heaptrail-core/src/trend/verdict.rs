//! What the detector says about one site.

use std::cmp::Ordering;

/// The verdict on one allocation site.
///
/// Severity order (used to sort reports, most severe first):
/// `Leak > Suspect > Fixed > WarmingUp > Plateau`. `Fixed` ranks above the two benign verdicts
/// because it is news a user is waiting for (a leak they deployed a fix for stopped growing);
/// `WarmingUp` ranks above `Plateau` because a young growing site may still turn into a leak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Live memory grows with a significant, sustained trend.
    Leak,
    /// Some evidence of growth, not enough (or not large enough) for `Leak`.
    Suspect,
    /// Seen for fewer than `min_windows` windows and growing.
    WarmingUp,
    /// No sustained growth.
    Plateau,
    /// Was `Leak`, and has stopped growing for `fixed_after` windows.
    Fixed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::Suspect => "suspect",
            Verdict::WarmingUp => "warming-up",
            Verdict::Plateau => "plateau",
            Verdict::Fixed => "fixed",
        }
    }

    /// Higher is more severe: Leak 4, Suspect 3, Fixed 2, WarmingUp 1, Plateau 0.
    pub fn severity(self) -> u8 {
        match self {
            Verdict::Leak => 4,
            Verdict::Suspect => 3,
            Verdict::Fixed => 2,
            Verdict::WarmingUp => 1,
            Verdict::Plateau => 0,
        }
    }

    /// Compares by severity (`Less` = less severe).
    pub fn cmp_severity(self, other: Verdict) -> Ordering {
        self.severity().cmp(&other.severity())
    }
}

impl Verdict {
    /// The verdicts a report always lists, whatever its `top` limit: a user is waiting for
    /// them (`heaptrail html` charts them first too).
    pub fn always_reported(self) -> bool {
        matches!(self, Verdict::Leak | Verdict::Suspect | Verdict::Fixed)
    }

    /// Every verdict, most severe first.
    pub const ALL: [Verdict; 5] = [
        Verdict::Leak,
        Verdict::Suspect,
        Verdict::Fixed,
        Verdict::WarmingUp,
        Verdict::Plateau,
    ];

    /// The verdict named `name`, if any.
    pub fn from_name(name: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// Written by its name: the report's `verdict` field.
impl serde::Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order() {
        let mut all = [
            Verdict::Plateau,
            Verdict::Fixed,
            Verdict::Leak,
            Verdict::WarmingUp,
            Verdict::Suspect,
        ];
        all.sort_by(|a, b| b.cmp_severity(*a));
        let names: Vec<_> = all.iter().map(|v| v.as_str()).collect();
        assert_eq!(names, ["leak", "suspect", "fixed", "warming-up", "plateau"]);
        assert_eq!(Verdict::WarmingUp.to_string(), "warming-up");
        assert_eq!(Verdict::ALL.map(|v| v.as_str()).to_vec(), names);
        assert_eq!(Verdict::from_name("fixed"), Some(Verdict::Fixed));
    }
}
