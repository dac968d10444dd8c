import { makeModel } from "@/test/fixtures";
import { memoryFit } from "./memory-fit";

describe("memoryFit", () => {
  it("compares the estimate with the free memory", () => {
    expect(memoryFit(makeModel({ estimated_memory_mb: 500 }), 600, null)).toMatchObject({ fits: true, neededMb: 500, availableMb: 600, unloads: null });
    expect(memoryFit(makeModel({ estimated_memory_mb: 700 }), 600, null)).toMatchObject({ fits: false });
  });

  it("counts the memory of the loaded model, which the load unloads first", () => {
    const loaded = makeModel({ id: 9, status: "loaded", memory_footprint: 300 * 1024 * 1024, estimated_memory_mb: 999 });
    const fit = memoryFit(makeModel({ id: 1, estimated_memory_mb: 800 }), 600, loaded);
    expect(fit).toMatchObject({ fits: true, availableMb: 900 });
    expect(fit?.unloads?.id).toBe(9);
  });

  it("falls back to the loaded model's estimate before its footprint is known", () => {
    const loaded = makeModel({ id: 9, status: "loaded", memory_footprint: null, estimated_memory_mb: 100 });
    expect(memoryFit(makeModel({ estimated_memory_mb: 650 }), 600, loaded)).toMatchObject({ fits: true, availableMb: 700 });
  });

  it("says nothing when a figure is unknown or the model is the loaded one", () => {
    expect(memoryFit(makeModel({ estimated_memory_mb: null }), 600, null)).toBeNull();
    expect(memoryFit(makeModel({ estimated_memory_mb: 5 }), null, null)).toBeNull();
    const loaded = makeModel({ id: 1, status: "loaded" });
    expect(memoryFit(loaded, 600, loaded)).toBeNull();
  });
});
