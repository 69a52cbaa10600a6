//! ISO-8601 rendering of [`Timestamp`] (`2023-10-26T13:49:39.208Z`), as CodePipeline's events
//! carry it in `start-time`. Hand-rolled so the core needs no date crate and no clock.

use super::types::Timestamp;

impl Timestamp {
    /// UTC, millisecond precision, `Z` suffix: the form of `start-time` in CodePipeline events.
    pub fn to_iso8601(self) -> String {
        const MS_PER_DAY: i64 = 86_400_000;
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let hours = ms_of_day / 3_600_000;
        let minutes = ms_of_day / 60_000 % 60;
        let seconds = ms_of_day / 1000 % 60;
        let millis = ms_of_day % 1000;
        format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp(0).to_iso8601(), "1970-01-01T00:00:00.000Z");
        // 2023-10-26T13:49:39.208Z, the start-time of CodePipeline's documented examples.
        assert_eq!(
            Timestamp(1_698_328_179_208).to_iso8601(),
            "2023-10-26T13:49:39.208Z"
        );
        // A leap day and the last millisecond of a century leap year.
        assert_eq!(
            Timestamp(951_782_400_000).to_iso8601(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp(978_307_199_999).to_iso8601(),
            "2000-12-31T23:59:59.999Z"
        );
        // Before the epoch.
        assert_eq!(Timestamp(-1).to_iso8601(), "1969-12-31T23:59:59.999Z");
    }
}
