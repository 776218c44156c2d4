// A TypeDoc plugin for the generated protobuf messages the SDK re-exports. ts-proto declares each
// message twice under one name: the interface (the SDK's type) and a `MessageFns` codec constant.
// A type-only re-export makes TypeDoc document the constant too, as a type alias `X = MessageFns<X>`
// beside the interface; that alias is wire plumbing, not SDK surface, so it is dropped here.
import { Converter, ReflectionKind } from "typedoc";

/** @param {import("typedoc").Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_RESOLVE_BEGIN, (context) => {
    const project = context.project;
    for (const reflection of project.getReflectionsByKind(ReflectionKind.TypeAlias)) {
      const type = /** @type {import("typedoc").DeclarationReflection} */ (reflection).type;
      if (type?.type === "reference" && type.name === "MessageFns") {
        project.removeReflection(reflection);
      }
    }
  });
}
