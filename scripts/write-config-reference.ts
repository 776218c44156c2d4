// `npm run docs:config`: writes the configuration reference pages from the settings tables.
import { writeReferencePages } from "./config-reference.js";

await writeReferencePages();
