//! Pure rendering of the appliance bundle (issue 3).
