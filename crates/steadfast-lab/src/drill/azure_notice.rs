//! Azure's maintenance notice as the drill publishes it: `NodeMaintenanceStarting` on the real
//! server's `AzureRedisEvents` channel, a few seconds ahead.

use std::time::Duration;

use tokio::time::Instant;

use crate::LabError;

/// Publishes Azure's NodeMaintenanceStarting for `server` on its `AzureRedisEvents` channel,
/// 3 s ahead, and returns the announced start (`StartTimeInUTC` has whole seconds: the start is
/// the second it names).
pub(super) async fn announce_azure_maintenance(
    server: &crate::server::Server,
) -> Result<Instant, LabError> {
    let ahead = Duration::from_secs(3);
    let start_wall = std::time::SystemTime::now() + ahead;
    let message = format!(
        "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|{}|IsReplica|False|IPAddress|{}|SSLPort|15001|NonSSLPort|6379",
        utc(start_wall),
        server.ip
    );
    server
        .cli(&["PUBLISH", "AzureRedisEvents", &message])
        .await?;
    let whole = start_wall
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    let now_wall = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Instant::now() + whole.saturating_sub(now_wall))
}

/// `yyyy-MM-ddTHH:mm:ss` in UTC.
fn utc(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_matches_known_instants() {
        let at = |secs| utc(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(1_709_208_000), "2024-02-29T12:00:00");
        assert_eq!(at(1_795_464_930), "2026-11-23T20:15:30");
    }
}
