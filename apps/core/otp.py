def is_verified(user: object) -> bool:
    """True for a user whose session passed the OTP step (django-otp's middleware adds is_verified)."""
    check = getattr(user, "is_verified", None)
    return bool(check is not None and check())
