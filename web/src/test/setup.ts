//! Test setup: jest-dom matchers, MSW (an unhandled request fails the test),
//! the socket module mocked, and every store reset after each test.
import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterAll, afterEach, beforeAll, vi } from "vitest";
import { useToastStore } from "@/components/ui/toast-store";
import { useChatStore } from "@/features/chat/stores/chat-store";
import { useModelsStore } from "@/features/models/stores/models-store";
import { useSystemStore } from "@/features/system/stores/system-store";
import { server } from "./server";

// Components never touch the socket; tests never open one.
vi.mock("@/lib/socket", () => ({ connectSocket: vi.fn(), disconnectSocket: vi.fn() }));

// MSW's "error" makes the request fail, which the code under test may catch (a toast):
// the test itself fails in afterEach, naming each request no handler answered.
const unhandled: string[] = [];
beforeAll(() =>
  server.listen({
    onUnhandledRequest: (request, print) => {
      unhandled.push(`${request.method} ${request.url}`);
      print.error();
    },
  }),
);
afterEach(() => {
  cleanup();
  server.resetHandlers();
  useModelsStore.getState().reset();
  useSystemStore.getState().reset();
  useChatStore.getState().reset();
  useToastStore.getState().reset();
  if (unhandled.length > 0) throw new Error(`Requests no MSW handler answered: ${unhandled.splice(0).join(", ")}`);
});
afterAll(() => server.close());
