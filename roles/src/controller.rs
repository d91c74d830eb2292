//! (being written)
use crate::{Ctx, Plan, RenderError};

pub(crate) fn render(_ctx: &Ctx<'_>, _plan: &mut Plan) -> Result<(), RenderError> {
    Ok(())
}
