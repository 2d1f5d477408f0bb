//! The `apply` flow: plan, blue/green rebuild, rollback, destroy, template (issue 4).
