// The Engine API's container and image lists become the rows `docker ps` and `docker images` print.
import { describe, expect, it } from "vitest";
import { containerRows, humanSize, imageRows } from "./docker-output.js";

describe("docker ps and images rows", () => {
  it("shortens ids, quotes and clips commands, and drops the leading slash of names", () => {
    const [row] = containerRows([
      {
        Id: "ffac0aa720afc07422c85b9b094b8ff17f979c529e44ea0cfa66bad13097dbff",
        Names: ["/sleeper", "/alias"],
        Image: "localhost/busybox:latest",
        Command: "sh -c 'while true; do echo tick; sleep 1; done'",
        Created: 1_700_000_000,
        State: "running",
        Status: "Up 2 seconds",
      },
    ]);
    expect(row).toEqual({
      id: "ffac0aa720af",
      image: "localhost/busybox:latest",
      command: `"sh -c 'while true;…"`,
      createdMs: 1_700_000_000_000,
      status: "Up 2 seconds",
      names: "sleeper,alias",
    });
    expect(containerRows([{ State: "exited", Names: null }])[0]).toMatchObject({
      status: "exited",
      names: "",
    });
  });

  it("gives each tag of an image a row, keeps a registry's port out of the tag, and marks untagged images", () => {
    const rows = imageRows([
      {
        Id: "sha256:d7fd18186e02a6bcbd38f0caa998c68c7b77eb06",
        RepoTags: ["localhost/busybox:latest", "reg:5000/b:1"],
      },
      { Id: "sha256:0123456789abcdef", RepoTags: null, Size: 2_130_000 },
      { Id: "sha256:00", RepoTags: ["reg:5000/notag"] },
    ]);
    expect(rows.map((r) => [r.repository, r.tag, r.id])).toEqual([
      ["localhost/busybox", "latest", "d7fd18186e02"],
      ["reg:5000/b", "1", "d7fd18186e02"],
      ["<none>", "<none>", "0123456789ab"],
      ["reg:5000/notag", "<none>", "00"],
    ]);
  });

  it("prints sizes in decimal units like docker", () => {
    expect(humanSize(0)).toBe("0B");
    expect(humanSize(999)).toBe("999B");
    expect(humanSize(2_130_000)).toBe("2.13MB");
    expect(humanSize(77_800_000)).toBe("77.8MB");
    expect(humanSize(1_200_000_000)).toBe("1.20GB");
  });
});
