//! Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus and
//! RotateKey (new AES-256 material for new ciphertexts; older versions still open
//! theirs). Due automatic rotations run in the store's transaction (`store/mod.rs`).

use super::*;

fn check_rotatable(rec: &KeyRecord) -> KmsResult<()> {
    if rec.origin == Origin::External {
        return Err(err(
            ErrorCode::UnsupportedOperationExternalCmkCanNotRotate,
            format!("key {} has imported material and cannot rotate", rec.key_id),
        ));
    }
    if rec.usage != KeyUsage::EncryptDecrypt {
        return Err(err(
            ErrorCode::UnsupportedOperationRotateNotSupported,
            format!(
                "key {} is {}: only ENCRYPT_DECRYPT keys rotate",
                rec.key_id,
                rec.usage.as_str()
            ),
        ));
    }
    if rec.state != KeyState::Enabled {
        return Err(state_error(rec));
    }
    Ok(())
}

impl KmsService {
    /// EnableKeyRotation: automatic rotation every RotateDays (7–365, default 365).
    ///
    /// # Errors
    /// `InvalidParameterValue` (RotateDays), the state error of a non-Enabled key,
    /// `UnsupportedOperation.ExternalCmkCanNotRotate` / `.RotateNotSupported`.
    pub fn enable_key_rotation(
        &self,
        ctx: &CallContext,
        req: EnableKeyRotationRequest,
    ) -> KmsResult<Empty> {
        let days = req.rotate_days;
        self.modify(ctx, "EnableKeyRotation", &req.key_id, |rec, now, _| {
            let days = days.unwrap_or(365);
            if !(7..=365).contains(&days) {
                return Err(err(
                    ErrorCode::InvalidParameterValue,
                    format!("RotateDays must be 7 to 365, not {days}"),
                ));
            }
            check_rotatable(rec)?;
            rec.rotation_enabled = true;
            rec.rotate_days = days as u32;
            rec.next_rotate_time = now + days * DAY;
            Ok(Empty {})
        })
    }

    /// DisableKeyRotation.
    ///
    /// # Errors
    /// As [`KmsService::enable_key_rotation`].
    pub fn disable_key_rotation(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        self.modify(ctx, "DisableKeyRotation", &req.key_id, |rec, _, _| {
            check_rotatable(rec)?;
            rec.rotation_enabled = false;
            rec.next_rotate_time = 0;
            Ok(Empty {})
        })
    }

    /// GetKeyRotationStatus.
    ///
    /// # Errors
    /// `ResourceUnavailable.CmkNotFound`.
    pub fn get_key_rotation_status(
        &self,
        ctx: &CallContext,
        req: KeyIdRequest,
    ) -> KmsResult<KeyRotationStatusResponse> {
        self.audited_key(ctx, "GetKeyRotationStatus", &req.key_id, |now| {
            let key = require(&req.key_id, "KeyId")?;
            let snap = self.fresh(now)?;
            let r = &Self::lookup(&snap, key, now)?.rec;
            Ok((
                KeyRotationStatusResponse {
                    key_rotation_enabled: r.rotation_enabled,
                    next_rotate_time: if r.rotation_enabled {
                        r.next_rotate_time
                    } else {
                        0
                    },
                    rotate_days: u64::from(r.rotate_days),
                    last_rotate_time: r.last_rotate_time,
                },
                r.key_id.clone(),
            ))
        })
    }

    /// RotateKey: new material for new ciphertexts now; older versions still
    /// decrypt. At most once per 24 hours per key.
    ///
    /// # Errors
    /// `LimitExceeded` within 24 h of the last rotation; as
    /// [`KmsService::enable_key_rotation`].
    pub fn rotate_key(&self, ctx: &CallContext, req: KeyIdRequest) -> KmsResult<Empty> {
        self.modify(ctx, "RotateKey", &req.key_id, |rec, now, txn| {
            check_rotatable(rec)?;
            if rec.last_rotate_time > 0 && now < rec.last_rotate_time + DAY {
                return Err(err(
                    ErrorCode::LimitExceeded,
                    format!("key {} was rotated less than 24 hours ago", rec.key_id),
                ));
            }
            let v = txn.new_aes_version(&rec.key_id, rec.current_version() + 1)?;
            rec.versions.push(v);
            rec.last_rotate_time = now;
            if rec.rotation_enabled {
                rec.next_rotate_time = now + u64::from(rec.rotate_days) * DAY;
            }
            Ok(Empty {})
        })
    }
}
