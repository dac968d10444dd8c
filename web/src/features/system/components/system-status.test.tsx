import { act, render, screen } from "@testing-library/react";
import { useSystemStore } from "../stores/system-store";
import { SystemStatus } from "./system-status";

const cpu = { gpu_utilization: 0, gpu_memory_used_mb: 0, gpu_memory_total_mb: 0, gpu_temperature: 0, device: "cpu", memory_total_mb: 16000, memory_free_mb: 12000 };

describe("SystemStatus", () => {
  it("shows GPU memory, utilisation and temperature with labels when there is a GPU", () => {
    render(<SystemStatus />);
    act(() =>
      useSystemStore.getState().setMetrics({ ...cpu, device: "cuda:0", gpu_utilization: 37.6, gpu_memory_used_mb: 2048, gpu_memory_total_mb: 81920, gpu_temperature: 64 }),
    );
    expect(screen.getByTestId("gpu-info")).toHaveTextContent("GPU memory2.0 GB / 80.0 GB");
    expect(screen.getByTestId("gpu-utilization")).toHaveTextContent("GPU utilisation38%");
    expect(screen.getByTestId("gpu-temperature")).toHaveTextContent("GPU temperature64 °C");
  });

  it("shows no GPU figures without a GPU", () => {
    render(<SystemStatus />);
    act(() => useSystemStore.getState().setMetrics(cpu));
    expect(screen.getByTestId("device-name")).toHaveTextContent("cpu");
    expect(screen.queryByTestId("gpu-info")).not.toBeInTheDocument();
    expect(screen.queryByTestId("gpu-utilization")).not.toBeInTheDocument();
    expect(screen.queryByTestId("gpu-temperature")).not.toBeInTheDocument();
  });

  it("shows the generation speed of the last minute, or idle", () => {
    render(<SystemStatus />);
    expect(screen.getByTestId("tokens-per-second")).toHaveTextContent("Generation—");
    act(() => useSystemStore.getState().setMetrics({ ...cpu, tokens_per_second: 42.26 }));
    expect(screen.getByTestId("tokens-per-second")).toHaveTextContent("Generation42.3 tokens/s");
    act(() => useSystemStore.getState().setMetrics({ ...cpu, tokens_per_second: null }));
    expect(screen.getByTestId("tokens-per-second")).toHaveTextContent("Generationidle");
  });
});
